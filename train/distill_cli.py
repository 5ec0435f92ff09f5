"""Distil a teacher (by default the released CLIP-LIT) into the real-time student network, on folders of photos.

Training crops are cut from the photos at random scales with random exposure, gamma and backlight; the teacher's light
maps of them are computed once and cached (--cache), so reruns and resumed runs pay only for the student. Each epoch
ends with the PSNR of the student's output against the teacher's on held-out photos; the run directory receives
student_best.pth (best validation PSNR), student_last.pth, state.pt (for --resume) and log.csv. The checkpoints
load wherever weights are accepted: cliplit enhance --model, export-engine --weights. See docs/distill.md.

--resume with a larger --epochs extends a run, finished or not. Resuming a finished run without one is refused
with the count it reached, and so are fewer epochs than a run is planned for: --epochs has a default, which would
otherwise silently cut a longer run short.
"""

from __future__ import annotations

import argparse

from cliplit.core.cli_settings import SettingsCli
from cliplit.core.errors import CliplitError
from cliplit.train.distill_config import DistillConfig, DistillRun

#: the settings this command's flags come from (tests/test_cli_help.py checks each field has its flag)
SETTINGS = (SettingsCli(DistillConfig), SettingsCli(DistillRun))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for options in SETTINGS:
        options.add_to(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from cliplit.train.distill import distill
    from cliplit.train.student import StudentConfig

    config, how = (options.from_args(args) for options in SETTINGS)
    if how.threads is not None:
        torch.set_num_threads(how.threads)
    try:
        StudentConfig(widths=config.widths)
    except ValueError as error:
        raise CliplitError(f"--widths: {error}") from error
    outcome = distill(config, resume=how.resume, overwrite=how.overwrite)
    print(
        f"distillation finished after {outcome.epochs_done} epochs; best validation PSNR vs the teacher "
        f"{outcome.best_psnr:.2f} dB; student in {outcome.best}"
    )
    return 0
