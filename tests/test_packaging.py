"""The distribution installs as one ``cliplit`` namespace with the declared entry points and extras."""

from __future__ import annotations

import subprocess
import sys
import zipfile

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("cliplit-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_puts_every_module_under_cliplit(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist() if not name.startswith("cliplit-")}
    assert top_level == {"cliplit"}
    packages = {name.rsplit("/", 1)[0] for name in wheel.namelist() if name.endswith("/__init__.py")}
    local = {
        f"cliplit/{p.parent.relative_to(REPO).as_posix()}"
        for folder in ("train", "export", "runtime", "benchmarks")
        for p in (REPO / folder).rglob("__init__.py")
    }
    assert local <= packages, f"sub-packages missing from the wheel: {sorted(local - packages)}"
    assert not any(name.startswith("cliplit/tests") for name in wheel.namelist())


def test_console_scripts_and_extras_are_declared(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "cliplit = cliplit.runtime.cli:main" in text
    assert "export-engine = cliplit.export.cli:main" in text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("torch") for dep in project["dependencies"]), "the base install must stay lean"
    assert {"export", "train", "tensorrt", "gpu", "dev", "all"} <= set(project["optional-dependencies"])


def test_wheel_carries_the_files_the_installed_runtime_reads(wheel):
    """Data files found at run time by path, not by import: a wheel without them fails only for users."""
    names = set(wheel.namelist())
    data = [
        *(REPO / "core" / "templates").glob("*.onnx"),  # graph templates (core/graphs.py)
        *(REPO / "core" / "released").glob("*.pth"),  # clip-lit-rt
        REPO / "runtime" / "gst_plugin" / "python" / "cliplitenhance.py",  # GST_PLUGIN_PATH's folder
    ]
    missing = [p.relative_to(REPO).as_posix() for p in data if f"cliplit/{p.relative_to(REPO).as_posix()}" not in names]
    assert len(data) > 3 and not missing, f"data files missing from the wheel: {missing}"
