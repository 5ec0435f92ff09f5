"""The ``cliplit`` command: one entry point, one subcommand per stage.

Each subcommand lives with its stage (``cliplit.runtime.enhance_cli``, ``cliplit.train.cli``, ...) and exposes
``add_arguments(parser)``, ``run(args) -> int`` and ``SETTINGS``, the settings dataclasses its flags derive from
(``cliplit.core.cli_settings``; defaults stated once, in the dataclass). The stages register them as
``cliplit.commands`` entry points in ``pyproject.toml``, so this dispatcher imports no other stage and a new
subcommand is one line there. Subcommand modules import only argparse-level code at import time, so
``cliplit --help`` and ``cliplit enhance`` never load torch; heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.core.version import cliplit_version

COMMAND_GROUP = "cliplit.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cliplit", description="CLIP-LIT backlit-image enhancement toolkit.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {cliplit_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = sorted(entry_points(group=COMMAND_GROUP), key=lambda point: point.name)
    if not commands:
        raise CliplitError("cliplit's subcommands are not registered: reinstall it (pip install -e .)")
    for point in commands:
        module = point.load()
        description = (module.__doc__ or point.name).strip()
        command = sub.add_parser(point.name, help=description.splitlines()[0], description=description)
        module.add_arguments(command)
        # EXTRA: the extra of pyproject.toml the command needs (None: the base install); optional for other packages'
        # commands.
        command.set_defaults(_run=module.run, _command=f"cliplit {point.name}", _extra=getattr(module, "EXTRA", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(lambda: args._run(args), args._command, args._extra)
    except KeyboardInterrupt as interrupt:  # a second Ctrl-C or SIGTERM during a run, or Ctrl-C outside one
        signum = getattr(interrupt, "signum", signal.SIGINT)
        print(f"aborted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
