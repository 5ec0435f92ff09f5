"""The parity check of a freshly built engine: its enhanced images against ONNX Runtime FP32 on the same ONNX file.

The engine is run through the runtime's own TensorRT backend (imported lazily: the export layer must not load the
runtime at import time), on the ``--verify-image`` photos fitted into the optimization profile or, without any, on a
synthetic backlit scene at the profile's ``opt`` size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cliplit.core.contract import io_spec, model_input_from_rgb
from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.core.shapes import ProfileShapes, batch_height_width
from cliplit.core.sidecar import EngineSidecar

# FP16 keeps the enhanced image within about 1/100 of a uint8 level of FP32 (well above 40 dB); a graph or precision
# error (an FP16 division, a wrong layout) lands far below.
PSNR_THRESHOLD_DB = 40.0
PSNR_PEAK = {"float": 1.0, "uint8": 255.0}


def parity_images(paths: tuple[Path, ...], profile: ProfileShapes) -> list[tuple[str, np.ndarray]]:
    """(label, RGB uint8 image inside the profile) for the --verify-image photos, or a synthetic backlit scene."""
    if not paths:
        _, height, width = batch_height_width(profile.io, profile.opt)
        print("  no --verify-image given: checking parity on a synthetic backlit scene; pass photos to check those")
        return [(f"synthetic backlit scene {width}x{height}", synthetic_backlit(height, width))]
    images = []
    for path in paths:
        rgb = fit_to_profile(read_image(path)[:, :, ::-1], profile)
        images.append((f"{path.name} at {rgb.shape[1]}x{rgb.shape[0]}", rgb))
    return images


def synthetic_backlit(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic backlit-looking RGB scene: bright sky, dark textured foreground, a soft horizon."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    sky = 195.0 + 50.0 * (1.0 - y) + 10.0 * x
    ground = 20.0 + 40.0 * x + 10.0 * np.sin(25.0 * x + 7.0 * y) + rng.normal(0.0, 6.0, (height, width))
    horizon = 0.55 + 0.08 * np.sin(6.0 * x)
    weight = 1.0 / (1.0 + np.exp(-(y - horizon) * 60.0))
    grey = sky * (1.0 - weight) + ground * weight
    tint = np.stack([grey * 1.0, grey * 0.93, grey * 0.85], axis=-1)
    return np.clip(np.rint(tint), 0, 255).astype(np.uint8)


def fit_to_profile(rgb: np.ndarray, profile: ProfileShapes) -> np.ndarray:
    """Resize ``rgb`` (keeping its aspect ratio where the profile allows) to a size inside the profile."""
    _, min_h, min_w = batch_height_width(profile.io, profile.min)
    _, max_h, max_w = batch_height_width(profile.io, profile.max)
    height, width = rgb.shape[:2]
    scale = min(1.0, max_h / height, max_w / width)
    scale = max(scale, min_h / height, min_w / width)
    new_h = min(max(round(height * scale), min_h), max_h)
    new_w = min(max(round(width * scale), min_w), max_w)
    if (new_h, new_w) == (height, width):
        return rgb
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)


def measure_parity(
    engine_path: Path, onnx_path: Path, images: list[tuple[str, np.ndarray]], sidecar: EngineSidecar, device: int
) -> list[dict[str, Any]]:
    """PSNR of the engine's enhanced image against ONNX Runtime FP32 on the same ONNX file, per image."""
    import onnxruntime as ort

    from cliplit.runtime.backends.tensorrt import TensorRTBackend, TensorRTOptions

    spec = io_spec(sidecar.io)
    min_batch = sidecar.profile["min"][0]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    results = []
    with TensorRTBackend(engine_path, TensorRTOptions(sidecar=sidecar, device=device)) as backend:
        for label, rgb in images:
            batch = np.repeat(model_input_from_rgb(sidecar.io, rgb), min_batch, axis=0)
            (reference,) = session.run(["enhanced"], {spec.input_name: batch})
            ours = backend.run(batch)["enhanced"]
            results.append({"input": label, "psnr_db": psnr(reference, ours, peak=PSNR_PEAK[sidecar.io])})
    return results
