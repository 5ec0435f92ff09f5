"""Real TensorRT on a real GPU: build FP16 engines of the released model and check them against ONNX Runtime FP32.

Skipped where TensorRT or an NVIDIA GPU is missing (every CPU machine); the fake-based tests cover the same code.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tensorrt_fakes import PHOTO, exported_onnx

from cliplit.core.contract import model_input_from_rgb
from cliplit.core.cuda import CudaRuntime
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.export.cli import add_arguments
from cliplit.export.onnx_export import ExportReport
from cliplit.export.tensorrt_build import PSNR_PEAK, PSNR_THRESHOLD_DB, build_engine_from_args, psnr
from cliplit.runtime.backends.tensorrt import TensorRTBackend


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


@pytest.mark.parametrize("io", ["float", "uint8"])
def test_fp16_engine_reaches_40_db_on_a_real_photo(
    io: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))
    onnx_path = exported_onnx(tmp_path_factory, io)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    shapes = {"float": "1x3x{}x{}", "uint8": "1x{}x{}x3"}[io]
    argv = ["--onnx", str(onnx_path), "--io", io, "--engine", str(tmp_path / "m.engine"), "--verify-image", str(PHOTO)]
    args = parser.parse_args([*argv, "--min-shape", shapes.format(64, 64), "--max-shape", shapes.format(2160, 3840)])
    sidecar = build_engine_from_args(args, ExportReport(path=onnx_path, io=io, opset=17))
    assert sidecar.parity_psnr_db >= PSNR_THRESHOLD_DB
    batch = model_input_from_rgb(io, read_image(PHOTO)[:, :, ::-1])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (reference,) = session.run(["enhanced"], {session.get_inputs()[0].name: batch})
    with TensorRTBackend(args.engine) as backend:
        first, second = backend.submit(batch), backend.submit(batch)
        outputs = [backend.wait(second), backend.wait(first)]
        with pytest.raises(CliplitError, match="outside the engine's optimization profile"):
            backend.run(np.zeros_like(batch, shape=(1, 3, 32, 32) if io == "float" else (1, 32, 32, 3)))
    for out in outputs:
        assert psnr(reference, out["enhanced"], PSNR_PEAK[io]) >= PSNR_THRESHOLD_DB
