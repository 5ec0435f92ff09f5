"""The parity check of a freshly built engine: its enhanced images against ONNX Runtime FP32 on the same ONNX file.

The engine is run by :class:`cliplit.core.tensorrt_engine.EngineRunner` (core: the exporter never imports the
runtime), on the ``--verify-image`` photos fitted into the optimization profile or, without any, on a synthetic
backlit scene at the profile's ``opt`` size; the comparison is :mod:`cliplit.export.verify`'s.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cliplit.core.contract import io_spec, model_input_from_rgb
from cliplit.core.images import read_image
from cliplit.core.shapes import ProfileShapes, batch_height_width
from cliplit.core.tensorrt_engine import EngineRunner
from cliplit.export.verify import Case, Check, Tolerance, compare, onnx_runtime

PSNR_THRESHOLD_DB = 40.0
PSNR_PEAK = {"float": 1.0, "uint8": 255.0}
PARITY_WHY = (
    "FP16 keeps the enhanced image within about 1/100 of a uint8 level of FP32 (well above 40 dB); a graph or "
    "precision error (an FP16 division, a wrong layout) lands far below"
)


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
    engine_path: Path,
    onnx_path: Path,
    images: list[tuple[str, np.ndarray]],
    profile: ProfileShapes,
    *,
    device: int,
    version_compatible: bool,
) -> tuple[Check, ...]:
    """PSNR of the engine's enhanced image against ONNX Runtime FP32 on the same ONNX file, per image (each repeated
    to the profile's smallest batch); not raising: the builder decides what a failure means."""
    input_name = io_spec(profile.io).input_name
    cases = [
        Case(label, np.repeat(model_input_from_rgb(profile.io, rgb), profile.min[0], axis=0)) for label, rgb in images
    ]
    tolerance = Tolerance(PSNR_THRESHOLD_DB, PARITY_WHY, psnr_peak=PSNR_PEAK[profile.io])
    with EngineRunner(engine_path, device=device, version_compatible=version_compatible) as engine:
        return compare(
            cases, lambda batch: engine.run({input_name: batch}), onnx_runtime(onnx_path), {"enhanced": tolerance}
        )
