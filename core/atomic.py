"""Write files so that a failure never leaves a truncated file under the final name.

Every writer in cliplit (images, videos, checkpoints, ONNX models, engines, downloads) writes to a hidden temporary
file in the destination folder and renames it into place only once it is complete; a rename within one file system
is atomic, so readers see either the old state or the whole new file.

A run killed outright (SIGKILL, a power cut) cannot delete its temporary file, so the name records who wrote it
(a tag of the host name and the process id), and the first write into a folder removes the temporaries there whose
writer is gone: same host, process no longer running. Temporaries of older cliplit versions (no process id in the
name, and the ``.cliplit-*`` scratch folders of the old video writer) are removed once untouched for an hour. Nothing
else is ever touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cliplit.core.errors import CliplitError

_UMASK = os.umask(0)
os.umask(_UMASK)

_log = logging.getLogger("cliplit")
#: this host, in temporary names (a process id means nothing on another host sharing the folder)
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
#: ``.{stem}.{host}-{pid}-{random}.part{suffix}``, as :func:`atomic_output` names its temporaries
_OURS = re.compile(r"^\..*\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]{8}\.part(\.[^.]*)?$")
#: what cliplit 0.1 left: ``.{stem}.{random}.part{suffix}`` files and ``.cliplit-{random}`` video scratch folders
_LEGACY_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.part(\.[^.]*)?$")
_LEGACY_DIR = re.compile(r"^\.cliplit-[a-z0-9_]{8}$")
LEGACY_STALE_AFTER_S = 3600.0
_swept: set[Path] = set()


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
    if final.parent.resolve() not in _swept:
        _swept.add(final.parent.resolve())
        remove_stale_temporaries(final.parent)
    prefix = f".{final.stem}.{_HOST}-{os.getpid()}-"
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=f".part{final.suffix}", dir=final.parent)
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


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries that killed cliplit runs left in ``folder`` (see the module docstring for which);
    returns what was removed. Errors (a read-only folder, a file gone meanwhile) leave things as they are."""
    removed = []
    try:
        entries = [entry for entry in Path(folder).iterdir() if entry.name.startswith(".")]
    except OSError:
        return removed
    for entry in entries:
        try:
            if _is_stale(entry):
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
                _log.warning("removed %s, left by an interrupted cliplit run", entry)
        except OSError:
            continue
    return removed


def _is_stale(entry: Path) -> bool:
    ours = _OURS.match(entry.name)
    if ours:
        return entry.is_file() and ours["host"] == _HOST and not _running(int(ours["pid"]))
    old = time.time() - entry.lstat().st_mtime > LEGACY_STALE_AFTER_S
    if _LEGACY_FILE.match(entry.name):
        return old and entry.is_file()
    if _LEGACY_DIR.match(entry.name):  # the old video writer kept one file in it: video.<suffix>
        return old and entry.is_dir() and all(child.name.startswith("video.") for child in entry.iterdir())
    return False


def _running(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would send CTRL_C_EVENT there: never call a writer gone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
