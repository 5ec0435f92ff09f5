"""``export-engine --engine`` from the command line: for real on this machine (no TensorRT), and end to end on fakes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from tensorrt_fakes import PHOTO, WEIGHTS, install

from cliplit.core.sidecar import read_sidecar
from cliplit.export.cli import main


def _tensorrt_installed() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("tensorrt", "tensorrt_lean"))


@pytest.mark.skipif(_tensorrt_installed(), reason="TensorRT is installed here; the GPU test covers real builds")
def test_without_tensorrt_the_onnx_is_written_and_the_engine_fails_fast(tmp_path: Path) -> None:
    """The real console script in a fresh interpreter, with nothing faked."""
    assert WEIGHTS.is_file(), f"missing shared test data {WEIGHTS}"
    onnx_path, engine = tmp_path / "x.onnx", tmp_path / "y.engine"
    env = {**os.environ, "CLIPLIT_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "cliplit.export.cli", "--weights", str(WEIGHTS), "--onnx", str(onnx_path)]
    result = subprocess.run(
        [*command, "--engine", str(engine)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == 2, result.stderr
    assert onnx_path.is_file() and onnx_path.stat().st_size > 100_000
    assert f"wrote {onnx_path}" in result.stdout
    error = result.stderr.strip()
    assert error.startswith("error: building a TensorRT engine needs the full TensorRT package and an NVIDIA GPU")
    assert "pip install 'cliplit[tensorrt]'" in error and f"{onnx_path} was written and runs with ONNX Runtime" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]  # no engine, sidecar or temporary file


def test_end_to_end_on_fake_tensorrt11(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert PHOTO.is_file(), f"missing shared test data {PHOTO}"
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))
    install(monkeypatch, "11.0.0.5")
    photo = tmp_path / "small.png"
    image = cv2.imread(str(PHOTO))
    cv2.imwrite(str(photo), cv2.resize(image, (160, 120), interpolation=cv2.INTER_AREA))
    onnx_path, engine = tmp_path / "m.onnx", tmp_path / "m.engine"
    argv = ["--weights", str(WEIGHTS), "--onnx", str(onnx_path), "--io", "uint8", "--engine", str(engine)]
    shapes = ["--min-shape", "1x16x16x3", "--opt-shape", "1x120x160x3", "--max-shape", "1x240x320x3"]
    assert main([*argv, *shapes, "--verify-image", str(photo)]) == 0
    out = capsys.readouterr().out
    assert "building a TensorRT 11.0.0.5 FP16 engine for NVIDIA Fake GPU" in out
    assert "strongly typed FP16 ONNX" in out and "parity on small.png at 160x120: PSNR" in out
    sidecar = read_sidecar(engine)
    assert sidecar.io == "uint8" and sidecar.profile["opt"] == [1, 120, 160, 3] and sidecar.parity_psnr_db >= 40
    # a second run refuses to replace the engine (checked before the export)
    assert main([*argv, *shapes]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
