"""Shared test fixtures: the official CLIP-LIT artifacts from ../shared and an isolated cliplit cache.

The artifacts are the ground truth for correctness tests. They are never copied into the repository; a missing file
is a test failure, not a skip, because a skipped reference test would silently stop guarding correctness.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# The serving tests use tritonclient's gRPC client in this process, and later tests fork (DataLoader workers). gRPC's
# fork handlers run in the parent at every fork and are a known source of crashes there; this suite never uses a
# gRPC channel across a fork, so they are switched off (the variable must be set before grpc is imported).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "clip-lit"
PHOTO_NAMES = (
    "110_51093502029_o",
    "111_51093504404_o",
    "30374039626_355dca2192_o",
    "91_51094235055_o",
    "c5b8b4070688114c602b27933c6699b6",
    "pexels-daniel-torobekov-5320051",
)
SMALL_PHOTO = "c5b8b4070688114c602b27933c6699b6"


def shared_file(relative: str) -> Path:
    """A file of ../shared/clip-lit, failing the test (never skipping) when it is missing."""
    path = SHARED / relative
    if not path.is_file():
        pytest.fail(f"reference file {path} is missing: tests need ../shared/clip-lit beside the checkout")
    return path


def photo(name: str) -> Path:
    return shared_file(f"input/{name}.jpg")


def reference(name: str) -> Path:
    return shared_file(f"reference/{name}.png")


@pytest.fixture(scope="session")
def released_weights() -> Path:
    return shared_file("enhancement_model.pth")


@pytest.fixture(scope="session")
def init_weights() -> Path:
    return shared_file("init_enhancement_model.pth")


@pytest.fixture(scope="session", autouse=True)
def cliplit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point $CLIPLIT_HOME at a temporary cache seeded with the released files, so names resolve offline.

    The resolver still verifies each file's SHA-256, so this exercises the real cache path, not a shortcut.
    """
    home = tmp_path_factory.mktemp("cliplit-home")
    weights = home / "weights"
    weights.mkdir()
    for name in ("enhancement_model.pth", "init_enhancement_model.pth"):
        shutil.copyfile(shared_file(name), weights / name)
    previous = os.environ.get("CLIPLIT_HOME")
    os.environ["CLIPLIT_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("CLIPLIT_HOME", None)
    else:
        os.environ["CLIPLIT_HOME"] = previous


@pytest.fixture(scope="session")
def released_enhancer(released_weights: Path):
    """The released network in the test padding variant (as the official inference runs it)."""
    from cliplit.train.checkpoint import load_enhancer

    return load_enhancer(released_weights)


@pytest.fixture(scope="session")
def float_onnx(released_enhancer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The released weights exported once per session in the ``float`` I/O variant."""
    from cliplit.export.onnx_export import export_onnx

    return export_onnx(released_enhancer, tmp_path_factory.mktemp("onnx") / "clip-lit-float.onnx", io="float").path


@pytest.fixture(scope="session")
def uint8_onnx(released_enhancer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The released weights exported once per session in the ``uint8`` I/O variant."""
    from cliplit.export.onnx_export import export_onnx

    return export_onnx(released_enhancer, tmp_path_factory.mktemp("onnx") / "clip-lit-uint8.onnx", io="uint8").path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the VapourSynth tests first. In whole-suite runs on the 2-core CI-class machine the pytest process died
    with SIGSEGV (no Python stack) as soon as these tests spawned their helper processes after ONNX Runtime,
    OpenVINO, torch and gRPC had all run in the process; alone, or after the serving tests only, they pass. Until the
    native cause is found, they run before those engines are loaded (the sort is stable: every other test keeps
    its order)."""
    items.sort(key=lambda item: 0 if item.path.name == "test_vapoursynth.py" else 1)
