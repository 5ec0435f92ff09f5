"""Write files so that a failure never leaves a truncated file under the final name.

Every writer in cliplit (images, videos, checkpoints, ONNX models, engines, downloads) writes to a hidden temporary
file in the destination folder and renames it into place only once it is complete; a rename within one file system
is atomic, so readers see either the old state or the whole new file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cliplit.core.errors import CliplitError

_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputExistsError(CliplitError, FileExistsError):
    """The output exists and overwriting was not asked for."""


def check_writable(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` is set."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    return path


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on any error delete it.

    The temporary name keeps the final suffix, so writers that choose a format by extension (OpenCV, ffmpeg) work.
    """
    final = check_writable(path, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the output the permissions open() would
    try:
        yield tmp
        if not overwrite and final.exists():
            raise OutputExistsError(f"{final} appeared while writing; pass --overwrite to replace it")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
