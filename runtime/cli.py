"""The ``cliplit`` command: one entry point, one subcommand per stage.

Each subcommand lives with its stage (``cliplit.train.cli``, ``cliplit.export.cli``, ...) and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import only argparse-level code at import time, so
``cliplit --help`` and ``cliplit enhance`` never load torch; heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cliplit.runtime.errors import CliplitError
from cliplit.runtime.version import cliplit_version

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "enhance": ("cliplit.runtime.enhance_cli", "enhance images, videos, cameras and streams"),
    "train": ("cliplit.train.cli", "train the enhancer with CLIP-LIT's iterative prompt learning"),
    "export": ("cliplit.export.cli", "export a checkpoint to ONNX and, optionally, a TensorRT engine"),
    "bench": ("cliplit.benchmarks.cli", "benchmark every backend against the PyTorch baseline"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cliplit", description="CLIP-LIT backlit-image enhancement toolkit.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {cliplit_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CliplitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
