"""Image fidelity measures used by exports, benchmarks, tests and the runtime's quality reports."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two images of the same shape (inf when identical).

    ``peak`` is the value range: 255 for uint8 frames, 1.0 for float images in [0, 1]. Computed in float64 so that
    near-identical images (PSNR of 90 dB and more) are measured, not rounded away.
    """
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(peak**2 / mse))
