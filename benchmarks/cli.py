"""cliplit bench: every backend against the PyTorch baseline, on the same frames, in one run.

Writes DIR/results.json (one record per backend × size × batch, plus the machine), DIR/results.md (the table) and
DIR/latency.png (the chart). Backends that cannot run here are listed with the reason instead of failing the run.
The PyTorch eager FP32 baseline always runs first: every speedup and every PSNR is relative to it.
"""

from __future__ import annotations

import argparse
import shlex

from cliplit.benchmarks.bench_settings import GROUPS, BenchSettings
from cliplit.core.cli_settings import SettingsCli

# No torch, onnxruntime or matplotlib at import time: `cliplit --help` imports this module (the registry is light).
#: the extra of pyproject.toml this command needs (the `cliplit` dispatcher names it when a module is missing)
EXTRA = "bench"
#: the settings this command's flags come from (tests/test_cli_help.py checks each field has its flag)
SETTINGS = (SettingsCli(BenchSettings, groups=GROUPS),)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for options in SETTINGS:
        options.add_to(parser)


def run(args: argparse.Namespace) -> int:
    from cliplit.benchmarks.report import check_outputs, write_results
    from cliplit.benchmarks.suite import run_suite

    settings: BenchSettings = SETTINGS[0].from_args(args)
    config = settings.suite_config()
    if config.video:
        from cliplit.benchmarks.video import check_clip_size, pan_photos

        check_clip_size(config.video_size or config.sizes[0])
        pan_photos(config.video_photos)  # a folder without photos fails now, not after the timing
    if config.reference_dir is not None:
        from cliplit.benchmarks.photos import reference_photos

        reference_photos(config.reference_dir)  # a wrong folder fails now, not after the timing
    check_outputs(settings.out, settings.overwrite)  # before minutes of measuring, not after
    results = run_suite(config)
    results["command"] = command_line(args)
    for path in write_results(results, settings.out, overwrite=settings.overwrite):
        print(f"wrote {path}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The run as one explicit ``cliplit bench`` command (every option spelled out), to reproduce it exactly."""
    parts = ["cliplit", "bench"]
    for key, value in sorted(vars(args).items()):
        if key.startswith("_") or key == "command" or value is None or value is False:
            continue
        option = "--" + key.replace("_", "-")
        parts += [option] if value is True else [option, str(value)]
    return shlex.join(parts)
