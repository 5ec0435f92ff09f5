"""A cached environment with PyTriton and NumPy 1, where tests/test_serve.py runs `cliplit serve` for real.

PyTriton 0.7 pins NumPy < 2 (and under NumPy 2 its Python backend answers with empty outputs), while the suite runs
on NumPy 2, OpenCV 5 and torch; so the server gets its own virtual environment outside the clone, beside CI's main one
(``.ci/run``), as the VapourSynth test does (tests/vapoursynth_env.py): ``~/.cache/cliplit-ci/serve-<key>``. The key
hashes the pinned requirements, ONNX Runtime's version and the interpreter, so a new pin builds a fresh environment
and an unchanged one is reused. It is built under a temporary name and renamed into place only once every package is
installed, so an interrupted build is never reused.

The environment holds third-party packages only, never cliplit: one environment serves every checkout (CI clones
into a new folder each run), so the checkout's own code comes in per test session through ``PYTHONPATH`` — a folder
of ``cliplit/<stage>`` links to the stage folders this process imports, plus a copy of the installed distribution's
metadata, whose entry points register `cliplit serve`. The server gets the same ONNX Runtime release as this process,
so its outputs can be compared with local enhancement bit for bit; torch is never installed there: models given as
weights are built from the shipped graph templates, as in the base install.

Building needs the package index; when pip fails the error names the command and shows pip's message, never a skip.
Only a platform PyTriton has no wheel for (it ships ``manylinux_2_35`` x86-64 and aarch64 wheels) is skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from importlib.metadata import version as installed_version
from pathlib import Path

from cached_env import build_venv, cached_venv

#: exact versions, so what a test checks does not change under it (resolved by pip for cliplit[serve], Nov 2026)
PINNED: tuple[str, ...] = (
    "nvidia-pytriton==0.7.0",
    "numpy==1.26.4",  # PyTriton's pin
    "opencv-python-headless==4.11.0.86",  # opencv 5 needs NumPy 2
    "onnx==1.23.2",  # the base install's: models are built from weights without torch
    "tritonclient[http,grpc]==2.73.0",
    "tqdm==4.70.1",
    "av==18.1.0",
)
#: where the environments live (default: ~/.cache/cliplit-ci, beside CI's main environment)
CACHE_VARIABLE = "CLIPLIT_CI_CACHE"
#: PyTriton's wheels: manylinux_2_35 for these machines
WHEEL_MACHINES = ("x86_64", "aarch64")
WHEEL_GLIBC = (2, 35)
#: cliplit's stage folders, as the ``cliplit.<stage>`` packages that pyproject.toml maps them to
STAGES = ("core", "train", "export", "runtime", "benchmarks")


class ServeEnvError(RuntimeError):
    """The environment could not be built or does not work."""


def unsupported_platform() -> str | None:
    """Why PyTriton cannot install here (no wheel for this platform), or None when it can."""
    machine = platform.machine()
    if sys.platform != "linux" or machine not in WHEEL_MACHINES:
        return f"PyTriton ships wheels for Linux {' and '.join(WHEEL_MACHINES)} only, not {sys.platform} {machine}"
    libc, libc_version = platform.libc_ver()
    numbers = tuple(int(part) for part in libc_version.split(".")[:2] if part.isdigit())
    if libc != "glibc" or numbers < WHEEL_GLIBC:
        wanted = ".".join(map(str, WHEEL_GLIBC))
        return f"PyTriton's wheels need glibc >= {wanted} (manylinux_2_35), this is {libc or 'no glibc'} {libc_version}"
    return None


def requirements() -> list[str]:
    """The pins plus this process's ONNX Runtime release, so server and local runs compute with the same kernels."""
    return [*PINNED, f"onnxruntime=={installed_version('onnxruntime')}"]


def environment_dir(requirements: list[str]) -> Path:
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    interpreter = f"python{sys.version_info[0]}.{sys.version_info[1]} {base}"
    key = hashlib.sha256("\n".join([*requirements, interpreter]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "cliplit-ci")
    return cache / f"serve-{key}"


@dataclass(frozen=True)
class ServeEnv:
    """A ready environment with this checkout's cliplit on its path; ``created_s`` is None when it was reused."""

    python: Path
    source: Path
    created_s: float | None

    def cliplit(self, *args: str) -> list[str]:
        """The command line of ``cliplit ARGS`` in this environment."""
        return [str(self.python), "-m", "cliplit.runtime.cli", *args]

    def environ(self) -> dict[str, str]:
        """This process's environment with only the checkout on ``PYTHONPATH`` (nothing of this process's packages)."""
        environ = {name: value for name, value in os.environ.items() if name not in ("PYTHONHOME", "VIRTUAL_ENV")}
        environ.update(PYTHONPATH=str(self.source), PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1")
        return environ


def ensure_environment(source_dir: Path) -> ServeEnv:
    """The cached environment (built first when missing), with this checkout's cliplit linked into ``source_dir``."""
    wanted = requirements()
    target = environment_dir(wanted)
    what = "building the serving test environment"
    python, created_s = cached_venv(sys.executable, target, wanted, ServeEnvError, what)
    env = ServeEnv(python, link_checkout(source_dir), created_s)
    check_environment(env)
    return env


def build_environment(target: Path, wanted: list[str]) -> None:
    """A venv of this interpreter at ``target`` holding ``wanted``."""
    build_venv(sys.executable, target, wanted, ServeEnvError, "building the serving test environment")


def link_checkout(directory: Path) -> Path:
    """``directory`` made a ``PYTHONPATH`` entry for the cliplit this process imports: ``cliplit/<stage>`` links to
    its stage folders and a ``.dist-info`` with its metadata and entry points (the `cliplit` command's subcommands)."""
    package = directory / "cliplit"
    package.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        spec = importlib.util.find_spec(f"cliplit.{stage}")
        if spec is None or not spec.submodule_search_locations:
            raise ServeEnvError(f"cliplit.{stage} is not importable here: install cliplit (pip install -e .)")
        folder = Path(next(iter(spec.submodule_search_locations))).resolve()
        (package / stage).symlink_to(folder, target_is_directory=True)
    try:
        installed = distribution("cliplit")
    except PackageNotFoundError:
        raise ServeEnvError("cliplit's metadata is not installed here: install cliplit (pip install -e .)") from None
    info = directory / f"cliplit-{installed.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cliplit\nVersion: {installed.version}\n")
    (info / "entry_points.txt").write_text(installed.read_text("entry_points.txt") or "")
    return directory


CHECK = """
import importlib.metadata, pathlib, numpy, pytriton, cliplit.runtime.serve_cli
print(pathlib.Path(cliplit.runtime.__path__[0]).resolve(), numpy.__version__)
print(sorted(p.name for p in importlib.metadata.entry_points(group="cliplit.commands")))
"""


def check_environment(env: ServeEnv) -> None:
    """The environment imports PyTriton, NumPy 1 and this checkout's `cliplit serve`, or a clear error says what not."""
    done = subprocess.run(
        [str(env.python), "-c", CHECK],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env.environ(),
        cwd=env.source,
    )
    if done.returncode != 0:
        raise ServeEnvError(f"the serving environment {env.python.parents[1]} does not work:\n{done.stderr[-4000:]}")
    (runtime, numpy_version), commands = done.stdout.split("\n")[0].split(), done.stdout.split("\n")[1]
    here = (env.source / "cliplit" / "runtime").resolve()
    if Path(runtime) != here or not numpy_version.startswith("1.") or "'serve'" not in commands:
        raise ServeEnvError(
            f"the serving environment {env.python.parents[1]} imports cliplit.runtime from {runtime} (want {here}), "
            f"NumPy {numpy_version} (want 1.x) and registers {commands} (want serve)"
        )
