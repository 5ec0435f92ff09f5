"""A cached environment of cliplit's base install (no extras), where tests/test_base_install.py runs the shipped models.

The base install must run every shipped model without torch. A finder that blocks ``import torch`` in this process's
environment (tests/test_runtime_no_torch.py) cannot show that on its own: it still runs the checkout's source folders,
with every other package of the dev environment at hand. So this environment holds only what a user's
``pip install .`` pulls in: the third-party packages of pyproject.toml's ``[project].dependencies``, read from the
file so it follows the project, plus ``[build-system].requires`` (setuptools, wheel) so the checkout can be built in
it without the package index. It lives outside the clone, beside CI's main one: ``~/.cache/cliplit-ci/base-<key>``
(``$CLIPLIT_CI_CACHE``), where the key hashes the requirement lines and the interpreter, so a change to the
dependencies builds a fresh environment and an unchanged one is reused (tests/cached_env.py builds it aside and
renames it into place). ONNX Runtime is pinned to this process's release, as in tests/serve_env.py, so the base
install's outputs can be compared with this process's bit for bit.

cliplit itself is never in the cached environment: one environment serves every checkout (CI clones into a new folder
each run). Per test session the checkout is installed non-editably (``pip install --no-deps --target``) into a
temporary folder, which then is the child processes' ``PYTHONPATH``; so its package data (the graph templates, the
bundled student) comes from what the build put there, exactly as for a user. What is built is the checkout as git
sees it (tracked files plus untracked ones that are not ignored), copied aside: a file that only exists here because
.gitignore keeps it out of the repository (as the templates once were) would be missing from a user's clone, and
building a copy leaves no ``build/`` or ``.egg-info`` behind in the checkout. The build runs without build isolation,
with the environment's own setuptools and ``--no-index``, so after the first build no test session needs the package
index (an isolated build would fetch setuptools on every session).

Building needs the package index once; when pip fails the error names the command and shows pip's message, never a
skip: a skipped test would stop guarding the lean install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from cached_env import cached_venv

REPO = Path(__file__).resolve().parents[1]
#: where the environments live (default: ~/.cache/cliplit-ci, beside CI's main environment)
CACHE_VARIABLE = "CLIPLIT_CI_CACHE"
#: what a checkout copy leaves out when git cannot list the files (not a git checkout): build outputs and caches
NOT_SOURCE = (".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".pytest_cache", ".ruff_cache")


class BaseEnvError(RuntimeError):
    """The environment could not be built, the checkout not installed, or the result does not work."""


def requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The base install's dependencies and the build requirements from ``pyproject``, plus this process's ONNX
    Runtime release (so the base install computes with the same kernels as the dev environment)."""
    with pyproject.open("rb") as file:
        table = tomllib.load(file)
    dependencies = list(table["project"]["dependencies"])
    build = list(table.get("build-system", {}).get("requires", []))
    return [*dependencies, *build, f"onnxruntime=={installed_version('onnxruntime')}"]


def environment_dir(requirements: list[str]) -> Path:
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    interpreter = f"python{sys.version_info[0]}.{sys.version_info[1]} {base}"
    key = hashlib.sha256("\n".join([*requirements, interpreter]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "cliplit-ci")
    return cache / f"base-{key}"


@dataclass(frozen=True)
class BaseEnv:
    """The base environment with this checkout installed into ``site``; ``created_s`` is None when the environment was
    reused, ``install_s`` how long installing the checkout took."""

    python: Path
    site: Path
    created_s: float | None
    install_s: float

    @property
    def root(self) -> Path:
        return self.python.parents[1]

    def cliplit(self, *args: str) -> list[str]:
        """The command line of ``cliplit ARGS`` in this environment."""
        return [str(self.python), "-m", "cliplit.runtime.cli", *args]

    def environ(self, home: Path) -> dict[str, str]:
        """This process's environment with only the installed checkout on ``PYTHONPATH`` and ``CLIPLIT_HOME`` at
        ``home`` (required: this process's own cache holds the released weights, which a user's does not)."""
        dropped = ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "CLIPLIT_HOME")
        environ = {name: value for name, value in os.environ.items() if name not in dropped}
        environ.update(PYTHONPATH=str(self.site), PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", CLIPLIT_HOME=str(home))
        return environ


def ensure_environment(directory: Path) -> BaseEnv:
    """The cached environment (built first when missing) with this checkout installed under ``directory``."""
    wanted = requirements()
    target = environment_dir(wanted)
    what = "building the base-install test environment"
    python, created_s = cached_venv(sys.executable, target, wanted, BaseEnvError, what)
    start = time.perf_counter()
    site = install_checkout(python, directory)
    env = BaseEnv(python, site, created_s, time.perf_counter() - start)
    check_environment(env, directory)
    return env


def install_checkout(python: Path, directory: Path) -> Path:
    """This checkout built and installed (not editable, no dependencies) with ``python`` into ``directory/site``."""
    source, site = directory / "source", directory / "site"
    copy_checkout(REPO, source)
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
    command += ["--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(source)]
    _run(command, "installing this checkout into the base environment")
    return site


def copy_checkout(repo: Path, target: Path) -> None:
    """The files of ``repo`` that git tracks or would track (not ignored), copied to ``target``; a folder that is not
    a git checkout is copied whole, less build outputs and caches."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        shutil.copytree(repo, target, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        return
    for name in sorted(set(os.fsdecode(entry) for entry in listed.split(b"\0") if entry)):
        path = repo / name
        if path.is_file() or path.is_symlink():  # listed but deleted in the work tree: gone for a user too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name, follow_symlinks=False)


CHECK = """
import importlib.metadata, pathlib, cliplit.runtime.enhance_cli, cliplit.core
print(pathlib.Path(cliplit.core.__path__[0]).resolve())
print(sorted(p.name for p in importlib.metadata.entry_points(group="cliplit.commands")))
"""


def check_environment(env: BaseEnv, directory: Path) -> None:
    """The environment imports `cliplit enhance` from the installed copy with its subcommands registered, or a clear
    error says what not."""
    home = directory / "check-home"
    command = [str(env.python), "-c", CHECK]
    done = _run(command, f"the base environment {env.root} does not work", environ=env.environ(home), cwd=directory)
    lines = done.stdout.splitlines()
    core, commands = (Path(lines[0]), lines[1]) if len(lines) >= 2 else (None, "")
    if core is None or not core.is_relative_to(env.site.resolve()) or "'enhance'" not in commands:
        raise BaseEnvError(
            f"the base environment {env.root} imports cliplit.core from {core} (want under {env.site}) and registers "
            f"{commands or 'no subcommands'} (want enhance):\n{done.stdout}{done.stderr[-4000:]}"
        )


def _run(
    command: list[str], what: str, *, environ: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` away from this process's packages; on failure raise :class:`BaseEnvError` with its stderr."""
    if environ is None:
        dropped = ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")
        environ = {name: value for name, value in os.environ.items() if name not in dropped}
        environ["PYTHONNOUSERSITE"] = "1"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=environ, cwd=cwd)
    except subprocess.TimeoutExpired as expired:
        raise BaseEnvError(f"{what}: `{' '.join(command)}` did not finish in {expired.timeout:.0f} s") from None
    if done.returncode != 0:
        raise BaseEnvError(f"{what}: `{' '.join(command)}` exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def disk_usage_mb(env: BaseEnv) -> float:
    """What the environment and the installed checkout take on disk, in MB as ``du -m`` counts them (allocated
    blocks, MiB, each hard-linked file once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in (env.root, env.site):
        for folder, subfolders, files in os.walk(top):
            for name in (*subfolders, *files):
                info = os.lstat(os.path.join(folder, name))
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_blocks * 512
    return total / (1 << 20)
