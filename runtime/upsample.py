"""Upsampling of a low-resolution light map to the frame's size, for ``--scale``.

With ``--scale S`` the network sees the frame at S× resolution and its light map L is brought back to full size
before the division ``x / L``. Two methods:

* ``bilinear`` (the default): plain interpolation. Measured on the six released photos, the light map of the full-
  resolution network is smooth enough that bilinear upsampling of its own downsampled copy loses nothing visible
  (44-59 dB); what ``--scale`` costs is that the network computes a different light map at low resolution (its
  receptive field covers more of the scene), an error no upsampling can undo.
* ``guided``: the fast guided filter (He, Sun and Tang, "Guided Image Filtering", TPAMI 2013; He and Sun, "Fast Guided
  Filter", 2015): within each window L is fitted as ``a·I + b`` of the frame's BT.601 luma I at low resolution, and only
  a and b are upsampled, so L picks up detail from the full-resolution image. It recovers part of the missing detail
  at S = 0.25 (+0.6 dB on average) but not at S = 0.5 (-0.2 dB).

The measured table is in docs/runtime.md.
"""

from __future__ import annotations

import cv2
import numpy as np

from cliplit.core.luma import BT601_LUMA_RGB

UPSAMPLE_METHODS: tuple[str, ...] = ("bilinear", "guided")

#: window radius of the guided filter, in low-resolution pixels (best of 1, 2, 4, 8 at S = 0.25)
GUIDED_RADIUS = 8
#: regularisation: guide variance (BT.601 luma in [0,1], squared) below which a window is treated as flat
GUIDED_EPS = 1e-4

#: BT.601 luma weights in OpenCV's BGR order, scaled for uint8 input
_BT601_LUMA_BGR8 = np.array(BT601_LUMA_RGB[::-1], dtype=np.float32).reshape(1, 3) / 255.0


def bt601_luma(frame_bgr: np.ndarray) -> np.ndarray:
    """The frame's BT.601 luma in [0, 1] as float32 (:mod:`cliplit.core.luma`), the guide image."""
    return cv2.transform(frame_bgr.astype(np.float32), _BT601_LUMA_BGR8)


def upsample_light_map(
    light_map: np.ndarray,
    frame_bgr: np.ndarray,
    method: str = "bilinear",
    *,
    radius: int = GUIDED_RADIUS,
    eps: float = GUIDED_EPS,
) -> np.ndarray:
    """Bring an h×w float32 light map to the H×W size of ``frame_bgr`` (uint8 BGR, the full-resolution frame)."""
    height, width = frame_bgr.shape[:2]
    if light_map.shape == (height, width):
        return light_map
    if method == "bilinear":
        return cv2.resize(light_map, (width, height), interpolation=cv2.INTER_LINEAR)
    if method != "guided":
        raise ValueError(f"unknown upsampling {method!r}; expected one of {', '.join(UPSAMPLE_METHODS)}")
    guide = bt601_luma(frame_bgr)
    small_guide = cv2.resize(guide, light_map.shape[::-1], interpolation=cv2.INTER_AREA)
    a, b = _guided_coefficients(small_guide, light_map.astype(np.float32, copy=False), radius, eps)
    a = cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(b, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.maximum(a * guide + b, 0.0, dtype=np.float32)


def _guided_coefficients(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, ...]:
    """Window-averaged linear coefficients (a, b) with source ≈ a·guide + b in every (2r+1)² window."""

    def box(image: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    mean_guide = box(guide)
    mean_source = box(source)
    covariance = box(guide * source) - mean_guide * mean_source
    variance = box(guide * guide) - mean_guide * mean_guide
    a = covariance / (variance + eps)
    b = mean_source - a * mean_guide
    return box(a), box(b)
