"""The enhancement formula and the contract's 8-bit rounding, in NumPy (the torch form is
``cliplit.train.network.apply_light_map``; the ONNX graph writes the same operations).

``enhanced = clamp(x / max(L, eps), 0, 1)`` with ``eps = LIGHT_MAP_EPS`` (see ``cliplit.core.contract`` for why the
guard changes nothing the official code would compute), rounded to 8 bits as the official references are:
``floor(y·255 + 0.5)``.
"""

from __future__ import annotations

import numpy as np

from cliplit.core.contract import LIGHT_MAP_EPS


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any layout) → uint8 levels, rounded as the references are: floor(y·255 + 0.5), clipped.

    Works in float32 (float64 input stays float64) and in place on one temporary, since it runs on every frame.
    """
    return _to_levels(image, np.uint8)


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint16 levels, rounded like the 8-bit contract: floor(y·65535 + 0.5), clipped (16-bit
    photos)."""
    return _to_levels(image, np.uint16)


def _to_levels(image: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    top = float(np.iinfo(dtype).max)
    levels = np.multiply(image, top, dtype=np.result_type(image.dtype, np.float32))
    levels += 0.5
    np.clip(levels, 0.0, top, out=levels)
    return levels.astype(dtype)  # truncation of a non-negative value: the floor


def apply_light_map_bgr8(frame_bgr: np.ndarray, light_map: np.ndarray) -> np.ndarray:
    """A uint8 H×W×3 frame divided by an H×W light map: floor(255·clamp(x / max(L, eps), 0, 1) + 0.5) as uint8.

    Computed in 8-bit levels (255·x is the frame itself) in four passes over the image; the same value as the
    formula up to float rounding (one level, in about one pixel in a million). A uint16 frame is computed the same
    way in 16-bit levels and stays uint16.
    """
    top = np.float32(np.iinfo(frame_bgr.dtype).max)
    divisor = np.maximum(light_map, np.float32(LIGHT_MAP_EPS))[:, :, None]
    levels = np.divide(frame_bgr, divisor, dtype=np.float32)
    levels += np.float32(0.5)
    np.minimum(levels, top, out=levels)
    return levels.astype(frame_bgr.dtype)  # truncation of a non-negative value: the floor
