"""Train the CLIP-LIT enhancer from a folder of backlit and a folder of well-lit photos (no pairs needed).

Stages: prompt initialisation, enhancer warm-up (from a random enhancer only), then rounds of enhancer training and
prompt refinement. Every option can also be set in a YAML or TOML file (--config); flags override the file. The run
directory receives config.yaml, log.csv, summary.json, checkpoints/last.pt (for --resume), per-round samples, and
enhancer_best.pth / enhancer_final.pth, which export-engine and the runtime load. See docs/training.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cliplit.core.cli_settings import SettingsCli
from cliplit.core.errors import CliplitError
from cliplit.train.config import TrainConfig, from_mapping, resume_config
from cliplit.train.config_files import read_config_file

#: the extra of pyproject.toml this command needs (the `cliplit` dispatcher names it when a module is missing)
EXTRA = "train"


#: the option groups of --help, each starting at the TrainConfig field named (fields keep the dataclass's order)
GROUPS = {
    "backlit": "data and output",
    "clip_model": "models",
    "rounds": "schedule",
    "batch_size": "sizes",
    "prompt_lr": "optimisers",
    "logit_scale": "losses",
    "prompt_augment": "augmentation",
    "device": "runtime",
}


#: every field of ``TrainConfig`` is a flag; left out, it keeps the config file's (or the default) value
OPTIONS = SettingsCli(TrainConfig, groups=GROUPS, type_metavars={int: "N", float: "X", str: "VALUE"})
#: the settings this command's flags come from (tests/test_cli_help.py checks each field has its flag)
SETTINGS = (OPTIONS,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--resume`` and one flag per option of ``TrainConfig``, grouped as in the dataclass."""
    parser.usage = "%(prog)s --backlit DIR --well-lit DIR --out DIR [OPTION ...]  (or --config FILE, --resume)"
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="YAML or TOML file of options (flags override it)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, exactly where it stopped",
    )
    OPTIONS.add_to(parser, suppress_defaults=True)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --config file, then the flags given; with --resume, the run's saved config instead of the
    defaults, and only options that do not change what the run computes may differ."""
    requested = read_config_file(args.config) if args.config else {}
    requested.update({key: value for key, value in vars(args).items() if key in OPTIONS.option_strings()})
    if not args.resume:
        return from_mapping(requested)
    if not requested.get("out"):
        raise CliplitError("--resume needs --out, the run directory to continue")
    saved = Path(requested["out"]) / "config.yaml"
    if not saved.is_file():
        raise CliplitError(f"cannot resume: {saved} not found (was {requested['out']} made by cliplit train?)")
    return resume_config(read_config_file(saved), requested)


def run(args: argparse.Namespace) -> int:
    from cliplit.train.loop import train

    outcome = train(config_from_args(args), resume=args.resume)
    state = "finished" if outcome.finished else "stopped (resumable)"
    print(f"training {state} after {outcome.step} iterations; outputs in {outcome.run_dir}")
    for stage, stats in outcome.summary["stages"].items():
        print(f"  {stage}: {stats['iterations']} iterations, {stats['its_per_s']} it/s")
    return 0
