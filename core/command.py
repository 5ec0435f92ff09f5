"""How every command-line entry point ends on a user's mistake: one line on stderr and exit status 2, never a traceback.

A :class:`CliplitError` is a mistake the user can fix (a missing file, a bad option, a model that does not fit) and
its message says how; an ImportError of a library an optional extra brings becomes one that names the extra to
install (:func:`cliplit.core.extras.missing_extra_error`). Anything else is a bug and keeps its traceback. The
``cliplit`` subcommands, ``export-engine`` and the benchmark scripts all end through :func:`run_command`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from cliplit.core.errors import CliplitError
from cliplit.core.extras import missing_extra_error

#: the exit status of a command refused for the user's mistake (argparse uses 2 for bad flags too)
USAGE_ERROR = 2


def run_command(body: Callable[[], int | None], command: str, extra: str | None = None) -> int:
    """Run ``body`` (a command's work after its flags are parsed) and return its exit status; ``command`` and
    ``extra`` (the optional extra it needs, None for the base install) name what to install when an import fails."""
    try:
        try:
            return int(body() or 0)
        except ImportError as error:
            friendly = missing_extra_error(error, command, extra)
            if friendly is None:
                raise
            raise friendly from error
    except CliplitError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
