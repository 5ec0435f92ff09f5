"""Virtual environments that tests build once and reuse, outside the clone (the VapourSynth plugins, PyTriton).

Each is built under a temporary name and renamed into place only when complete, so a half-built environment is never
reused; a concurrent build that finished first wins. A failing command raises the caller's error type with the
command and the end of its output, never a skip.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def run_checked(command: list[str], error: type[Exception], what: str) -> None:
    """Run ``command``; on failure or after 30 minutes raise ``error`` naming ``what``, the command and its stderr."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as expired:
        raise error(f"{what}: `{' '.join(command)}` did not finish in {expired.timeout:.0f} s") from None
    if done.returncode != 0:
        raise error(
            f"{what} failed: `{' '.join(command)}` exited {done.returncode} (does this machine reach the package "
            f"index?):\n{done.stderr[-4000:]}"
        )


def build_venv(
    base_python: str | Path, target: Path, requirements: list[str], error: type[Exception], what: str
) -> None:
    """A venv of ``base_python`` at ``target`` holding ``requirements``, built aside and renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{target.name}.building-", dir=target.parent))
    try:
        run_checked([str(base_python), "-m", "venv", "--clear", str(building)], error, what)
        pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run_checked([*pip, *requirements], error, what)
        # Only the console scripts' shebangs name the build directory, and none is used: Python finds its prefix
        # from pyvenv.cfg beside bin/, so the renamed environment works.
        building.rename(target)
    except OSError:
        if not (target / "bin" / "python").is_file():  # not a concurrent build that finished first: a real failure
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def cached_venv(
    base_python: str | Path, target: Path, requirements: list[str], error: type[Exception], what: str
) -> tuple[Path, float | None]:
    """The python of the venv at ``target``, built first (``build_venv``) when missing, and how long building it took
    (None when it was reused: test logs report a build, not a reuse)."""
    python = target / "bin" / "python"
    if python.is_file():
        return python, None
    start = time.perf_counter()
    build_venv(base_python, target, requirements, error, what)
    return python, time.perf_counter() - start
