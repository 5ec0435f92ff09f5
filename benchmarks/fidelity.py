"""How far each backend's output is from the PyTorch FP32 reference, on one shared check frame per size.

A speedup is only worth something if the output is the same picture, so every backend runs the same check frame and
is compared with the eager FP32 network's output on it. The check frame is a random 8-bit BGR frame: float backends
see it as RGB/255 (exactly representable), 8-bit backends as is, and their 8-bit output is compared with the FP32
reference rounded the way the contract rounds (floor(y·255 + 0.5)). So a perfect 8-bit backend scores the PSNR of
identical frames, not that of a rounding error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplit.core.images import to_bgr8
from cliplit.core.metrics import psnr


@dataclass(frozen=True)
class Fidelity:
    """PSNR (None when identical) and max |difference| in the output's own unit (1.0 or 255 levels)."""

    psnr_db: float | None
    max_abs_diff: float
    unit: str


def check_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """The shared random 1×H×W×3 uint8 BGR frame every backend is checked on at this size."""
    return np.random.default_rng([seed, height, width]).integers(0, 256, (1, height, width, 3), dtype=np.uint8)


def quantised_reference(enhanced_rgb: np.ndarray) -> np.ndarray:
    """The float reference (N×3×H×W RGB in [0, 1]) as the contract's uint8 N×H×W×3 BGR frames."""
    return np.stack([to_bgr8(np.ascontiguousarray(image.transpose(1, 2, 0)[..., ::-1])) for image in enhanced_rgb])


def compare(output: np.ndarray, reference_rgb: np.ndarray) -> Fidelity:
    """Compare a backend's ``enhanced`` output (float NCHW RGB or uint8 NHWC BGR) with the FP32 reference."""
    if output.dtype == np.uint8:
        expected, peak, unit = quantised_reference(reference_rgb), 255.0, "uint8 levels"
    else:
        expected, peak, unit = reference_rgb, 1.0, "[0,1]"
    value = psnr(output, expected, peak=peak)
    diff = float(np.abs(output.astype(np.float64) - expected.astype(np.float64)).max())
    return Fidelity(None if value == float("inf") else value, diff, unit)
