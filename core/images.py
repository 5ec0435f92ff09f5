"""Read and write still images: 8-bit BGR for the network, and whole photos for ``cliplit enhance``.

:func:`read_image` gives what every backend and the uint8 ONNX contract take, H×W×3 uint8 BGR: grayscale is
replicated to three channels, alpha is dropped and 16-bit images are scaled to 8 bits with rounding.

:func:`read_photo` gives a :class:`Photo`: the same upright colour pixels at their own depth (16-bit PNG/TIFF stay
16-bit) plus what an enhanced copy must keep, since the enhancement is a per-pixel gain that changes none of it: the
alpha channel, the ICC colour profile (without it a Display-P3 or Adobe RGB photo would be shown as sRGB, its colours
shifted) and the EXIF. :func:`write_image` writes a photo back with all of that in the formats that hold it (alpha:
PNG, TIFF, WebP; 16 bits: PNG, TIFF; profile and EXIF: PNG, JPEG, WebP, TIFF); :func:`photo_losses` says what a
format drops, so the command can warn instead of dropping it silently. OpenCV decodes and encodes the pixels (the
same encoders as before, 16-bit included); the profile and EXIF are read from and written into the containers by
:mod:`cliplit.core.image_metadata`.

The EXIF orientation is applied on read, as image viewers do, so a portrait phone photo (stored sideways with a
"rotate 90°" tag) is enhanced and written upright; the EXIF written out says orientation 1 (normal), so every viewer
shows it the same way, and drops the embedded thumbnail (IFD1), which would still show the unenhanced picture.

HEIC/HEIF (phones) and AVIF inputs are decoded by Pillow with pillow-heif (the ``heif`` extra); they are read in 8
bits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError
from cliplit.core.image_metadata import exif_loss, read_metadata, tiff_block, upright_exif, with_metadata
from cliplit.core.light_map import to_uint8

#: what OpenCV reads and writes, and so what ``--ext`` may name
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".ppm", ".pgm"})
#: read through Pillow: HEIC/HEIF with pillow-heif, AVIF with Pillow's own plugin (both come with the extra)
PILLOW_SUFFIXES = frozenset({".heic", ".heif", ".avif"})
PILLOW_EXTRA = "heif"
#: output formats that keep each part of a photo
ALPHA_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".webp"})
SIXTEEN_BIT_SUFFIXES = frozenset({".png", ".tif", ".tiff"})
METADATA_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"})

_FORMAT_NAMES = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
#: the picture a viewer shows, from the stored pixels, per EXIF orientation (TIFF 6.0 / EXIF 2.3, tag 0x0112)
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: a.swapaxes(0, 1)[::-1],
}


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded photo, upright: ``pixels`` H×W×3 BGR, uint8 or uint16; ``alpha`` H×W of the depth it was read at;
    ``icc_profile`` the ICC profile's bytes; ``exif`` the EXIF block (a TIFF structure, orientation 1)."""

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None


def is_image_path(path: str | os.PathLike[str]) -> bool:
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in PILLOW_SUFFIXES


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` to an H×W×3 uint8 BGR array, with a clear error for missing or undecodable files."""
    return to_bgr8(read_photo(path).pixels, str(path))


def read_photo(path: str | os.PathLike[str]) -> Photo:
    """Decode ``path`` whole (see the module docstring), with a clear error for missing or undecodable files."""
    path = Path(path)
    if not path.is_file():
        raise CliplitError(f"{path}: no such file")
    if path.suffix.lower() in PILLOW_SUFFIXES:
        return _read_with_pillow(path)
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode copes with non-ASCII paths on every OS
    # IMREAD_UNCHANGED keeps alpha and 16 bits; unlike the other flags it leaves the EXIF orientation to us
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise CliplitError(f"{path}: not a readable image (corrupt, truncated or an unsupported format)")
    encoded = data.tobytes()
    icc_profile, exif = read_metadata(encoded)
    orientation, exif = upright_exif(exif)
    return _photo(image, str(path), orientation, icc_profile, exif)


def to_bgr8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded image of any common depth and channel count to H×W×3 uint8 BGR."""
    image = _to_8_or_16_bits(image, name)
    if image.dtype == np.uint16:
        image = _uint16_to_uint8(image)
    colour, _ = _split_alpha(image, name)
    return colour


def photo_losses(photo: Photo, path: str | os.PathLike[str]) -> list[str]:
    """What writing ``photo`` to ``path`` drops because the format cannot hold it, one phrase each ([]: nothing)."""
    suffix = Path(path).suffix.lower() or ".png"
    name = _FORMAT_NAMES.get(suffix, suffix.lstrip(".").upper())
    losses = []
    if photo.alpha is not None and suffix not in ALPHA_SUFFIXES:
        losses.append(f"alpha channel dropped: {name} has none")
    if photo.pixels.dtype == np.uint16 and suffix not in SIXTEEN_BIT_SUFFIXES:
        losses.append(f"16-bit input written as 8-bit: {name} holds 8 bits per channel")
    if photo.icc_profile and suffix not in METADATA_SUFFIXES:
        losses.append(f"colour profile dropped: {name} cannot hold one, so colours may look shifted")
    if photo.exif and suffix not in METADATA_SUFFIXES:
        losses.append(f"EXIF dropped: {name} cannot hold it")
    elif photo.exif and (why := exif_loss(photo.exif, suffix)):
        losses.append(f"EXIF dropped: {why}")
    return losses


def write_image(path: str | os.PathLike[str], image: np.ndarray | Photo, *, overwrite: bool = False) -> Path:
    """Encode ``image`` (an array as OpenCV takes it, or a :class:`Photo` with what the format holds of it, see
    :func:`photo_losses`) to ``path`` atomically; the format follows the suffix."""
    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    pixels = _encodable(image, suffix) if isinstance(image, Photo) else image
    with atomic_output(path, overwrite=overwrite) as tmp:
        ok, encoded = cv2.imencode(suffix, pixels)
        if not ok:
            raise CliplitError(f"{path}: OpenCV cannot encode this format")
        data = encoded.tobytes()
        if isinstance(image, Photo) and suffix in METADATA_SUFFIXES:
            data = with_metadata(data, suffix, pixels, image.icc_profile, image.exif)
        tmp.write_bytes(data)  # unlike ndarray.tofile, reports a full disk as ENOSPC
    return path


# --- pixels -----------------------------------------------------------------------------------------------------------


def _photo(image: np.ndarray, name: str, orientation: int, icc_profile: bytes | None, exif: bytes | None) -> Photo:
    image = _to_8_or_16_bits(image, name)
    if orientation in _UPRIGHT:
        image = np.ascontiguousarray(_UPRIGHT[orientation](image))
    colour, alpha = _split_alpha(image, name)
    return Photo(colour, alpha, icc_profile or None, exif)


def _to_8_or_16_bits(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype in (np.float32, np.float64):
        return to_uint8(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise CliplitError(f"{name}: unsupported pixel type {image.dtype}")
    return image


def _uint16_to_uint8(image: np.ndarray) -> np.ndarray:
    return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _split_alpha(image: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """H×W×3 BGR colour and the alpha channel (None if there is none) of a decoded image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), None
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR), None
    if channels == 3:
        return image, None
    if channels == 4:
        return np.ascontiguousarray(image[:, :, :3]), np.ascontiguousarray(image[:, :, 3])
    raise CliplitError(f"{name}: unsupported channel count {channels}")


def _encodable(photo: Photo, suffix: str) -> np.ndarray:
    """The array OpenCV encodes for ``photo`` in the format of ``suffix``: BGR or BGRA, 8 or 16 bits as it holds.
    The alpha channel follows the colour's depth, so it comes back bit-exact when the depth is kept."""
    pixels = photo.pixels
    if pixels.dtype == np.uint16 and suffix not in SIXTEEN_BIT_SUFFIXES:
        pixels = _uint16_to_uint8(pixels)
    if photo.alpha is None or suffix not in ALPHA_SUFFIXES:
        return pixels
    alpha = photo.alpha
    if alpha.dtype != pixels.dtype:
        alpha = _uint16_to_uint8(alpha) if alpha.dtype == np.uint16 else alpha.astype(np.uint16) * np.uint16(257)
    return np.dstack([pixels, alpha])


def _read_with_pillow(path: Path) -> Photo:
    """HEIC/HEIF and AVIF, which OpenCV does not read, through Pillow (and pillow-heif for HEIF)."""
    suffix = path.suffix.lower()
    install = f"pip install 'cliplit[{PILLOW_EXTRA}]'"
    needs = "Pillow" if suffix == ".avif" else "Pillow and pillow-heif"
    try:
        from PIL import Image, features

        if suffix != ".avif":
            from pillow_heif import register_heif_opener

            register_heif_opener()
    except ImportError as error:
        raise CliplitError(f"{path}: reading {suffix} images needs {needs}: {install}") from error
    if suffix == ".avif" and not features.check("avif"):
        raise CliplitError(f"{path}: this Pillow was built without AVIF support: {install}")
    try:
        with Image.open(path) as image:
            mode = "RGBA" if "A" in image.mode or "transparency" in image.info else "RGB"
            rgb = np.asarray(image.convert(mode))
            icc_profile, exif = image.info.get("icc_profile"), image.info.get("exif")
    except (OSError, ValueError, SyntaxError) as error:
        raise CliplitError(f"{path}: not a readable image ({error})") from error
    orientation, exif = upright_exif(tiff_block(exif))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if mode == "RGBA" else cv2.COLOR_RGB2BGR)
    return _photo(bgr, str(path), orientation, icc_profile, exif)
