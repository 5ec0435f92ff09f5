"""Read and write still images as 8-bit BGR, the layout every backend and the uint8 ONNX contract use.

Photos arrive in many forms (grayscale, with alpha, 16-bit PNG/TIFF); the network wants three 8-bit colour channels.
Conversions here are explicit and documented so nothing surprising happens silently: grayscale is replicated to
three channels, alpha is dropped (the enhancer has no notion of transparency), 16-bit images are scaled to 8 bits
with rounding. The EXIF orientation tag is applied on read, as image viewers do, so a portrait phone photo (stored
sideways with a "rotate 90°" tag) is enhanced and written upright; outputs carry no orientation tag, so every
viewer shows them the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError
from cliplit.core.light_map import to_uint8

#: any depth (16-bit stays 16-bit until to_bgr8 rounds it) and any colour (grey stays grey); unlike IMREAD_UNCHANGED,
#: these flags let OpenCV apply the EXIF orientation. The decoder drops alpha, which to_bgr8 would drop anyway.
_READ_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".ppm", ".pgm"})


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` to an H×W×3 uint8 BGR array, with a clear error for missing or undecodable files."""
    path = Path(path)
    if not path.is_file():
        raise CliplitError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode copes with non-ASCII paths on every OS
    image = cv2.imdecode(data, _READ_FLAGS) if data.size else None
    if image is None:
        raise CliplitError(f"{path}: not a readable image (corrupt, truncated or an unsupported format)")
    return to_bgr8(image, str(path))


def to_bgr8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded image of any common depth and channel count to H×W×3 uint8 BGR."""
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = to_uint8(image)
    elif image.dtype != np.uint8:
        raise CliplitError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return image
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3])
    raise CliplitError(f"{name}: unsupported channel count {channels}")


def write_image(path: str | os.PathLike[str], image_bgr: np.ndarray, *, overwrite: bool = False) -> Path:
    """Encode ``image_bgr`` to ``path`` atomically; the format follows the suffix."""
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        ok, encoded = cv2.imencode(path.suffix.lower() or ".png", image_bgr)
        if not ok:
            raise CliplitError(f"{path}: OpenCV cannot encode this format")
        tmp.write_bytes(encoded.tobytes())  # unlike ndarray.tofile, reports a full disk as ENOSPC
    return path
