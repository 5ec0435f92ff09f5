"""Real TensorRT on a real GPU: what the fakes cannot prove. Run by ``bash benchmarks/gpu_suite.sh`` (or alone).

Skipped where TensorRT or an NVIDIA GPU is missing (every CPU machine); the fake-based tests cover the same code.
Checked here, for both I/O variants:

* FP16 engines reach 40 dB against ONNX Runtime FP32 on a real photo, two frames in flight, profile enforced;
* a version-compatible engine runs in every TensorRT runtime module installed (``tensorrt``, ``tensorrt_dispatch``,
  ``tensorrt_lean``), each in a fresh interpreter that can import only that module, and a plain engine is refused by
  the runtime-only modules with cliplit's message;
* ``--device 1`` builds and runs on GPU 1 when two GPUs exist, also when frames arrive from another thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tensorrt_fakes import PHOTO, exported_onnx

from cliplit.core.contract import model_input_from_rgb
from cliplit.core.cuda import CudaRuntime
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.core.sidecar import EngineSidecar
from cliplit.export.cli import add_arguments, engine_settings
from cliplit.export.parity import PSNR_PEAK, PSNR_THRESHOLD_DB
from cliplit.export.tensorrt_build import build_engine
from cliplit.runtime.backends.tensorrt import TensorRTBackend, TensorRTOptions

SHAPES = {"float": "1x3x{}x{}", "uint8": "1x{}x{}x3"}
#: each runtime module, and the modules hidden from the interpreter that tests it
RUNTIMES = {
    "tensorrt": (),
    "tensorrt_dispatch": ("tensorrt",),
    "tensorrt_lean": ("tensorrt", "tensorrt_dispatch"),
}
RUN_IN_ONE_MODULE = """
import json, sys
import numpy as np
for hidden in sys.argv[1].split(","):
    if hidden:
        sys.modules[hidden] = None  # makes `import hidden` fail, as if it were not installed
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.tensorrt import TensorRTBackend
try:
    with TensorRTBackend(sys.argv[2]) as backend:
        np.save(sys.argv[4], backend.run(np.load(sys.argv[3]))["enhanced"])
except CliplitError as error:
    print(json.dumps({"error": str(error)}))
else:
    print(json.dumps({"error": None}))
"""


def _gpu_and_tensorrt() -> str | None:
    """None when a real build can run here, else why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed"
    try:
        CudaRuntime().gpu(0)
    except CliplitError as error:
        return str(error)
    return None


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(
        _gpu_and_tensorrt() is not None, reason=f"needs TensorRT and an NVIDIA GPU: {_gpu_and_tensorrt()}"
    ),
]


def _build(onnx_path: Path, engine: Path, io: str, *extra: str, max_side: tuple[int, int] = (2160, 3840)):
    """export-engine's engine step: its arguments mapped onto settings, then ``build_engine``."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--onnx", str(onnx_path), "--io", io, "--engine", str(engine), "--verify-image", str(PHOTO)]
    shapes = ["--min-shape", SHAPES[io].format(64, 64), "--max-shape", SHAPES[io].format(*max_side)]
    args = parser.parse_args([*argv, *shapes, *extra])
    return build_engine(onnx_path, engine, engine_settings(args))


def _photo_batch(io: str, width: int | None = None) -> np.ndarray:
    rgb = read_image(PHOTO)[:, :, ::-1]
    if width is not None:
        import cv2

        rgb = cv2.resize(rgb, (width, round(rgb.shape[0] * width / rgb.shape[1])), interpolation=cv2.INTER_AREA)
    return model_input_from_rgb(io, np.ascontiguousarray(rgb))


def _reference(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (enhanced,) = session.run(["enhanced"], {session.get_inputs()[0].name: batch})
    return enhanced


@pytest.mark.parametrize("io", ["float", "uint8"])
def test_fp16_engine_reaches_40_db_on_a_real_photo(
    io: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))
    onnx_path = exported_onnx(tmp_path_factory, io)
    sidecar = _build(onnx_path, tmp_path / "m.engine", io)
    assert sidecar.parity_psnr_db >= PSNR_THRESHOLD_DB
    batch = _photo_batch(io)
    reference = _reference(onnx_path, batch)
    with TensorRTBackend(tmp_path / "m.engine") as backend:
        first, second = backend.submit(batch), backend.submit(batch)
        outputs = [backend.wait(second), backend.wait(first)]
        with pytest.raises(CliplitError, match="outside the engine's optimization profile"):
            backend.run(np.zeros_like(batch, shape=(1, 3, 32, 32) if io == "float" else (1, 32, 32, 3)))
    for out in outputs:
        assert psnr(reference, out["enhanced"], PSNR_PEAK[io]) >= PSNR_THRESHOLD_DB


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], tuple[Path, EngineSidecar]]:
    """FP16 engines of both variants, plain and version-compatible, with a small profile (quick builds)."""
    folder = tmp_path_factory.mktemp("engines")
    built = {}
    for io in ("float", "uint8"):
        for compatible in (False, True):
            engine = folder / f"{io}-{'vc' if compatible else 'plain'}.engine"
            extra = ("--version-compatible",) if compatible else ()
            sidecar = _build(exported_onnx(tmp_path_factory, io), engine, io, *extra, max_side=(720, 1280))
            built[io, compatible] = engine, sidecar
    return built


def _run_in(module: str, engine: Path, batch: np.ndarray, folder: Path) -> tuple[str | None, np.ndarray | None]:
    """Run ``engine`` in a fresh interpreter that can import only ``module`` of TensorRT: (error, enhanced)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (benchmarks/gpu_suite.sh installs it with the same version)")
    np.save(folder / "batch.npy", batch)
    command = [sys.executable, "-c", RUN_IN_ONE_MODULE, ",".join(RUNTIMES[module]), str(engine)]
    result = subprocess.run(
        [*command, str(folder / "batch.npy"), str(folder / "out.npy")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    return error, (None if error else np.load(folder / "out.npy"))


@pytest.mark.parametrize("module", list(RUNTIMES))
@pytest.mark.parametrize("io", ["float", "uint8"])
def test_version_compatible_engine_runs_in_each_runtime_module(
    io: str, module: str, engines, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    engine, sidecar = engines[io, True]
    batch = _photo_batch(io, width=640)
    error, enhanced = _run_in(module, engine, batch, tmp_path)
    version = _module_version(module)
    if module == "tensorrt_lean" and version != sidecar.tensorrt_version:
        assert error is not None and "only runs engines built by its own version" in error  # the documented limit
        return
    assert error is None, error
    reference = _reference(exported_onnx(tmp_path_factory, io), batch)
    assert psnr(reference, enhanced, PSNR_PEAK[io]) >= PSNR_THRESHOLD_DB


@pytest.mark.parametrize("module", ["tensorrt_dispatch", "tensorrt_lean"])
def test_runtime_only_modules_refuse_a_plain_engine_with_a_clear_message(module: str, engines, tmp_path: Path) -> None:
    engine, _ = engines["uint8", False]
    error, _ = _run_in(module, engine, _photo_batch("uint8", width=640), tmp_path)
    assert error is not None and "was built without --version-compatible" in error


def _module_version(module: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}; print({module}.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


def test_device_1_builds_and_runs_on_gpu_1_from_another_thread(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda = CudaRuntime()
    count = cuda.call("cudaGetDeviceCount")
    if count < 2:
        pytest.skip(f"needs two GPUs for --device 1; this machine has {count}")
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))
    onnx_path = exported_onnx(tmp_path_factory, "uint8")
    sidecar = _build(onnx_path, tmp_path / "d1.engine", "uint8", "--device", "1", max_side=(720, 1280))
    assert sidecar.gpu_name == cuda.gpu(1).name
    batch = _photo_batch("uint8", width=640)
    seen: dict[str, object] = {}
    with TensorRTBackend(tmp_path / "d1.engine", TensorRTOptions(device=1)) as backend:

        def infer() -> None:
            handle = backend.submit(batch)
            seen["device"] = backend.cuda.current_device()
            buffer = backend._slots[handle.slot].buffers["frame"].device
            seen["memory_on"] = int(backend.cuda.call("cudaPointerGetAttributes", buffer).device)
            seen["enhanced"] = backend.wait(handle)["enhanced"]

        worker = threading.Thread(target=infer)
        worker.start()
        worker.join()
    assert (seen["device"], seen["memory_on"]) == (1, 1)
    assert psnr(_reference(onnx_path, batch), seen["enhanced"], PSNR_PEAK["uint8"]) >= PSNR_THRESHOLD_DB
