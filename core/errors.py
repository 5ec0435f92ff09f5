"""The one exception type for problems a user can fix (bad input, missing files, wrong engine).

The CLI prints these as a one-line ``error: ...`` and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CliplitError(Exception):
    """A user-facing error whose message says what went wrong and what to do."""
