"""A cached Python ≥ 3.12 environment with VapourSynth and vs-mlrt's ORT and OpenVINO plugins, for tests.

The plugins are wheels on PyPI (``vapoursynth-mlrt-ort``, ``vapoursynth-mlrt-ov``) that need Python ≥ 3.12, while the
suite itself may run on an older Python, so they live in their own virtual environment outside the clone, as CI's
main one does (``.ci/run``): ``~/.cache/cliplit-ci/vs-<key>``, where the key hashes the pinned versions and the
interpreter's version, so a new pin builds a fresh environment and an unchanged one is reused. It is built under a
temporary name and renamed into place only once every package is installed, so an interrupted build is never reused.

A machine without Python ≥ 3.12 gets a :class:`VapourSynthEnvError` that says how to provide one, never a skip: a
silently skipped test would stop guarding the single-output export.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cached_env import cached_venv

#: exact versions, so the result a test checks does not change under it; bump them together with the key
PINNED: tuple[str, ...] = (
    "vapoursynth==81",
    "vapoursynth-mlrt-ort==17.1.1",
    "vapoursynth-mlrt-ov==17.1",
    "numpy==2.5.5",
)
MIN_PYTHON = (3, 12)
#: an interpreter to use instead of searching (any Python ≥ 3.12)
PYTHON_VARIABLE = "CLIPLIT_VS_PYTHON"
#: where the environments live (default: ~/.cache/cliplit-ci, beside CI's main environment)
CACHE_VARIABLE = "CLIPLIT_CI_CACHE"
SCRIPT = Path(__file__).with_name("vapoursynth_script.py")


class VapourSynthEnvError(RuntimeError):
    """No usable interpreter, or the environment could not be built."""


@dataclass(frozen=True)
class VapourSynthEnv:
    """A ready environment; ``created_s`` is how long building it took, None when it was reused."""

    python: Path
    created_s: float | None

    def run_script(self, *args: str | os.PathLike[str], timeout: float = 600) -> str:
        """Run ``vapoursynth_script.py`` with ``args`` in this environment and return its standard output."""
        command = [str(self.python), str(SCRIPT), *map(str, args)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise VapourSynthEnvError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout


def python_version(python: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None if it does not run."""
    try:
        done = subprocess.run(
            [str(python), "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def candidate_pythons() -> list[Path]:
    """Interpreters to try, best first: $CLIPLIT_VS_PYTHON, this one, python3.N on PATH, then pyenv's versions."""
    found: list[Path] = []
    if os.environ.get(PYTHON_VARIABLE):
        found.append(Path(os.environ[PYTHON_VARIABLE]))
    found.append(Path(sys.executable))
    for minor in range(20, MIN_PYTHON[1] - 1, -1):
        on_path = shutil.which(f"python3.{minor}")
        if on_path:
            found.append(Path(on_path))
    roots = {Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")), Path.home() / ".pyenv", Path("/root/.pyenv")}
    for root in sorted(roots):
        found.extend(sorted((root / "versions").glob("3.*/bin/python3"), key=_version_key, reverse=True))
    return found


def _version_key(python: Path) -> tuple[int, ...]:
    """pyenv's version folder name as numbers (3.13.0 after 3.9.18), from ``<root>/versions/<version>/bin/python3``."""
    return tuple(int(part) if part.isdigit() else -1 for part in python.parents[1].name.split("."))


def find_python() -> tuple[Path, tuple[int, int]]:
    """The first candidate that runs and is at least ``MIN_PYTHON``; a clear error when there is none."""
    tried = []
    for python in candidate_pythons():
        version = python_version(python)
        tried.append(f"{python} ({'.'.join(map(str, version)) if version else 'does not run'})")
        if version is not None and version >= MIN_PYTHON:
            return python, version
    wanted = ".".join(map(str, MIN_PYTHON))
    raise VapourSynthEnvError(
        f"the VapourSynth test needs Python >= {wanted} (vs-mlrt's wheels require it) and found none; tried: "
        f"{'; '.join(tried)}. Install one (e.g. `pyenv install {wanted}` or your distribution's python{wanted}) or set "
        f"{PYTHON_VARIABLE} to its path"
    )


def environment_dir(version: tuple[int, int]) -> Path:
    key = hashlib.sha256("\n".join([*PINNED, f"python{version[0]}.{version[1]}"]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "cliplit-ci")
    return cache / f"vs-{key}"


def ensure_environment() -> VapourSynthEnv:
    """The cached environment, built first if it is missing (about half a minute with a fast package index)."""
    base, version = find_python()
    target = environment_dir(version)
    what = "building the VapourSynth test environment"
    return VapourSynthEnv(*cached_venv(base, target, list(PINNED), VapourSynthEnvError, what))
