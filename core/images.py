"""Read and write still images: 8-bit BGR for the network, and whole photos for ``cliplit enhance``.

:func:`read_image` gives what every backend and the uint8 ONNX contract take, H×W×3 uint8 BGR: grayscale is
replicated to three channels, alpha is dropped and 16-bit images are scaled to 8 bits with rounding.

:func:`read_photo` gives a :class:`Photo`: the same upright colour pixels at their own depth (16-bit PNG/TIFF stay
16-bit) plus what an enhanced copy must keep, since the enhancement is a per-pixel gain that changes none of it: the
alpha channel, the ICC colour profile (without it a Display-P3 or Adobe RGB photo would be shown as sRGB, its colours
shifted) and the EXIF. :func:`write_image` writes a photo back with all of that in the formats that hold it (alpha:
PNG, TIFF, WebP; 16 bits: PNG, TIFF; profile and EXIF: PNG, JPEG, WebP, TIFF); :func:`photo_losses` says what a
format drops, so the command can warn instead of dropping it silently. OpenCV decodes and encodes the pixels (the
same encoders as before, 16-bit included); the profile and EXIF are read from and written into the PNG chunks, JPEG
segments, WebP chunks and TIFF tags here, following each container's specification, because OpenCV's metadata API
is new (4.12+) and does not cover TIFF, and Pillow cannot hold 16-bit colour.

The EXIF orientation is applied on read, as image viewers do, so a portrait phone photo (stored sideways with a
"rotate 90°" tag) is enhanced and written upright; the EXIF written out says orientation 1 (normal), so every viewer
shows it the same way, and drops the embedded thumbnail (IFD1), which would still show the unenhanced picture.

HEIC/HEIF (phones) and AVIF inputs are decoded by Pillow with pillow-heif (the ``heif`` extra); they are read in 8
bits.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError
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

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_HEADER = b"Exif\x00\x00"  # before the TIFF structure in a JPEG APP1 segment (and in some PNG/WebP writers')
_ICC_HEADER = b"ICC_PROFILE\x00"  # a JPEG APP2 segment of the profile: this, sequence number, count, data
_JPEG_SEGMENT_MAX = 65533  # payload bytes of one JPEG marker segment (its length field counts itself)
_ICC_CHUNK_MAX = _JPEG_SEGMENT_MAX - len(_ICC_HEADER) - 2
_TAG_ORIENTATION, _TAG_ICC = 0x0112, 34675
_TIFF_SHORT, _TIFF_LONG, _TIFF_UNDEFINED = 3, 4, 7
#: bytes per element of each TIFF field type (a RATIONAL is two LONGs, an SRATIONAL two SLONGs)
_TIFF_ELEMENT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 1, 7: 1, 8: 2, 9: 4, 10: 4, 11: 4, 12: 8, 13: 4}
_TIFF_ELEMENTS_PER_VALUE = {5: 2, 10: 2}
#: pointers to the EXIF, GPS and interoperability IFDs, copied whole with the EXIF
_SUB_IFDS = frozenset({34665, 34853, 40965})
#: what of a TIFF's IFD0 is EXIF (description, camera, resolution, dates, the EXIF and GPS IFDs), as opposed to the
#: tags that describe the file's own layout
_EXIF_IFD0_TAGS = frozenset({270, 271, 272, 282, 283, 296, 305, 306, 315, 33432, 34665, 34853})
#: the picture a viewer shows, from the stored pixels, per EXIF orientation (TIFF 6.0 / EXIF 2.3, tag 0x0112)
_FORMAT_NAMES = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
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
    icc_profile, exif = _read_metadata(encoded)
    orientation, exif = _upright_exif(exif)
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
    elif photo.exif and suffix in (".jpg", ".jpeg") and len(_EXIF_HEADER + photo.exif) > _JPEG_SEGMENT_MAX:
        losses.append("EXIF dropped: larger than the 64 KiB a JPEG segment holds")
    elif photo.exif and suffix in (".tif", ".tiff") and _tiff_exif_entries(photo.exif, "<", bytearray()) is None:
        losses.append("EXIF dropped: its IFDs are damaged")
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
            data = _with_metadata(data, suffix, image, pixels)
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
    orientation, exif = _upright_exif(_tiff_block(exif))
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if mode == "RGBA" else cv2.COLOR_RGB2BGR)
    return _photo(bgr, str(path), orientation, icc_profile, exif)


# --- metadata on read -------------------------------------------------------------------------------------------------


def _read_metadata(data: bytes) -> tuple[bytes | None, bytes | None]:
    """The ICC profile and the EXIF block of an encoded PNG, JPEG, WebP or TIFF. None for what is absent, for other
    formats, and where the container is damaged around them: OpenCV decoded the pixels, so the photo goes on.

    A TIFF's EXIF is the EXIF part of its IFD0 (:data:`_EXIF_IFD0_TAGS`), without the orientation tag: OpenCV's
    decoder applies that one itself."""
    try:
        if data.startswith(_PNG_SIGNATURE):
            return _png_metadata(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_metadata(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunks = {fourcc: data[start:end] for fourcc, start, end in _riff_chunks(data)}
            return chunks.get(b"ICCP"), _tiff_block(chunks.get(b"EXIF"))
        if _is_tiff(data):
            return _tiff_icc(data), _exif_of_tiff(data)
    except (struct.error, zlib.error, ValueError, IndexError):
        pass
    return None, None


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk's data; slices are left to the caller, so the image data is not copied."""
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        yield kind, at + 8, at + 8 + length
        if kind == b"IEND":
            return
        at += 12 + length


def _png_metadata(data: bytes) -> tuple[bytes | None, bytes | None]:
    icc_profile = exif = None
    for kind, start, end in _png_chunks(data):
        if kind == b"iCCP":  # profile name, NUL, compression method (0: zlib), compressed profile
            body = data[start:end]
            icc_profile = zlib.decompress(body[body.index(b"\x00") + 2 :])
        elif kind == b"eXIf":
            exif = _tiff_block(data[start:end])
    return icc_profile, exif


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, payload start, payload end) of each segment before the image data."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            return
        (length,) = struct.unpack_from(">H", data, at + 2)
        yield marker, at + 4, at + 2 + length
        at += 2 + length


def _jpeg_metadata(data: bytes) -> tuple[bytes | None, bytes | None]:
    exif = None
    icc_chunks: dict[int, bytes] = {}
    icc_count = 0
    for marker, start, end in _jpeg_segments(data):
        payload = data[start:end]
        if marker == 0xE1 and exif is None and payload.startswith(_EXIF_HEADER):
            exif = payload[len(_EXIF_HEADER) :]
        elif marker == 0xE2 and payload.startswith(_ICC_HEADER):
            sequence, icc_count = payload[len(_ICC_HEADER)], payload[len(_ICC_HEADER) + 1]
            icc_chunks[sequence] = payload[len(_ICC_HEADER) + 2 :]
    complete = icc_count and sorted(icc_chunks) == list(range(1, icc_count + 1))
    return (b"".join(icc_chunks[n] for n in sorted(icc_chunks)) if complete else None), exif


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(FourCC, start, end) of each chunk of a RIFF file (WebP); chunks are padded to an even size."""
    at, end = 12, min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    while at + 8 <= end:
        fourcc, size = struct.unpack_from("<4sI", data, at)
        yield fourcc, at + 8, at + 8 + size
        at += 8 + size + (size & 1)


def _tiff_block(exif: bytes | None) -> bytes | None:
    """The TIFF structure of an EXIF block, without the "Exif\\0\\0" header some containers keep before it."""
    if exif and exif.startswith(_EXIF_HEADER):
        exif = exif[len(_EXIF_HEADER) :]
    return exif or None


def _is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*")


def _ifd0(data: bytes) -> tuple[str, int, list[tuple[int, int, int, int]]]:
    """Byte order, offset of IFD0 and its entries of a TIFF structure (a TIFF file, or an EXIF block)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        raise ValueError("not a TIFF structure")
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    return order, ifd, _ifd_entries(data, order, ifd)


def _ifd_entries(data: bytes, order: str, ifd: int) -> list[tuple[int, int, int, int]]:
    """(tag, type, count, offset of the value field) of each entry of the IFD at ``ifd``."""
    (count,) = struct.unpack_from(order + "H", data, ifd)
    entries = []
    for index in range(count):
        at = ifd + 2 + 12 * index
        tag, kind, values = struct.unpack_from(order + "HHI", data, at)
        entries.append((tag, kind, values, at + 8))
    struct.unpack_from(order + "I", data, ifd + 2 + 12 * count)  # the next-IFD field must be there too
    return entries


def _exif_of_tiff(data: bytes) -> bytes | None:
    """The EXIF part of a TIFF's IFD0 as an EXIF block of its own (None where it has none)."""
    block = bytearray(b"II*\x00\x00\x00\x00\x00")
    entries = _tiff_exif_entries(data, "<", block, _EXIF_IFD0_TAGS)
    if not entries:
        return None
    struct.pack_into("<I", block, 4, _write_ifd(block, "<", entries))
    return bytes(block)


def _tiff_exif_entries(
    source: bytes, order: str, out: bytearray, tags: frozenset[int] = _EXIF_IFD0_TAGS
) -> dict[int, bytes] | None:
    """The ``tags`` of IFD0 of the TIFF structure ``source`` as entries of a TIFF being written into ``out`` in byte
    order ``order`` (see :func:`_copied_entries`); None where ``source`` is damaged."""
    try:
        source_order, ifd, _ = _ifd0(source)
        return _copied_entries(source, source_order, ifd, out, order, tags)
    except (ValueError, struct.error):
        return None


def _copied_entries(
    source: bytes, source_order: str, ifd: int, out: bytearray, order: str, tags: frozenset[int] | None, depth: int = 0
) -> dict[int, bytes]:
    """The entries of the IFD at ``ifd`` in ``source`` (those in ``tags``; None: all) as 12-byte entries of the TIFF
    being written into ``out``, by tag: values converted to byte order ``order`` and, where they do not fit an
    entry, appended to ``out``; the EXIF, GPS and interoperability IFDs they point to copied whole the same way.
    Values keep their meaning but not their place, so offsets inside a maker note (which no standard describes)
    may go stale, as with any EXIF editor."""
    if depth > 2:  # IFD0 → EXIF → interoperability is as deep as EXIF goes; more is a loop
        raise ValueError("EXIF IFDs nested too deep")
    entries = {}
    for tag, kind, count, at in _ifd_entries(source, source_order, ifd):
        if tags is not None and tag not in tags:
            continue
        if tag in _SUB_IFDS:
            (offset,) = struct.unpack_from(source_order + "I", source, at)
            sub = _copied_entries(source, source_order, offset, out, order, None, depth + 1)
            entries[tag] = struct.pack(order + "HHII", tag, _TIFF_LONG, 1, _write_ifd(out, order, sub))
            continue
        element = _TIFF_ELEMENT.get(kind)
        if element is None:  # a type this TIFF version does not define: its size is unknown
            continue
        size = element * _TIFF_ELEMENTS_PER_VALUE.get(kind, 1) * count
        start = at if size <= 4 else struct.unpack_from(source_order + "I", source, at)[0]
        value = source[start : start + size]
        if len(value) != size:
            raise ValueError(f"EXIF tag {tag} points past the end")
        if element > 1 and source_order != order:
            value = np.frombuffer(value, f"u{element}").byteswap().tobytes()
        if size > 4:
            out += b"\x00" * (len(out) & 1)  # TIFF offsets are word-aligned
            start = len(out)
            out += value
            value = struct.pack(order + "I", start)
        entries[tag] = struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")
    return entries


def _write_ifd(out: bytearray, order: str, entries: dict[int, bytes], next_ifd: bytes = b"\x00" * 4) -> int:
    """Append an IFD of ``entries`` (sorted by tag, as TIFF requires) to ``out``; returns its offset."""
    out += b"\x00" * (len(out) & 1)
    offset = len(out)
    out += struct.pack(order + "H", len(entries)) + b"".join(entries[tag] for tag in sorted(entries)) + next_ifd
    return offset


def _tiff_icc(data: bytes) -> bytes | None:
    order, _, entries = _ifd0(data)
    for tag, _, size, at in entries:
        if tag == _TAG_ICC:  # bytes (UNDEFINED or BYTE), inline when they fit in the 4-byte field
            start = at if size <= 4 else struct.unpack_from(order + "I", data, at)[0]
            return data[start : start + size] if start + size <= len(data) else None
    return None


def _upright_exif(exif: bytes | None) -> tuple[int, bytes | None]:
    """The orientation an EXIF block gives (1 when none) and the block to write out: orientation 1 and no IFD1
    (the thumbnail of the unenhanced picture). An EXIF block that cannot be parsed is not carried."""
    if exif is None:
        return 1, None
    try:
        order, ifd, entries = _ifd0(exif)
    except (ValueError, struct.error):
        return 1, None
    patched = bytearray(exif)
    orientation = 1
    for tag, kind, _, at in entries:
        if tag == _TAG_ORIENTATION and kind == _TIFF_SHORT:
            (orientation,) = struct.unpack_from(order + "H", exif, at)
            struct.pack_into(order + "H", patched, at, 1)
    struct.pack_into(order + "I", patched, ifd + 2 + 12 * len(entries), 0)
    return (orientation if orientation in _UPRIGHT else 1), bytes(patched)


# --- metadata on write ------------------------------------------------------------------------------------------------


def _with_metadata(data: bytes, suffix: str, photo: Photo, pixels: np.ndarray) -> bytes:
    """OpenCV's encoding ``data`` of ``pixels`` with the photo's colour profile and EXIF added."""
    icc_profile, exif = photo.icc_profile, photo.exif
    if suffix == ".png":
        chunks = b""
        if icc_profile:  # profile name, NUL, compression method 0 (zlib), compressed profile
            chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile))
        if exif:
            chunks += _png_chunk(b"eXIf", exif)
        ihdr_end = len(_PNG_SIGNATURE) + 12 + 13  # IHDR comes first and holds 13 bytes; both must precede IDAT
        return data[:ihdr_end] + chunks + data[ihdr_end:]
    if suffix in (".jpg", ".jpeg"):
        return _jpeg_with(data, icc_profile, exif)
    if suffix == ".webp":
        alpha = pixels.ndim == 3 and pixels.shape[2] == 4
        return _webp_with(data, icc_profile, exif, pixels.shape[1], pixels.shape[0], alpha)
    return _tiff_with(data, icc_profile, exif)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _jpeg_with(data: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """APP1 (EXIF) and APP2 (the profile, in as many segments as it needs) after SOI and the JFIF APP0."""
    segments = b""
    if exif and len(_EXIF_HEADER + exif) <= _JPEG_SEGMENT_MAX:
        segments += _jpeg_segment(0xE1, _EXIF_HEADER + exif)
    if icc_profile:
        chunks = [icc_profile[at : at + _ICC_CHUNK_MAX] for at in range(0, len(icc_profile), _ICC_CHUNK_MAX)]
        for number, chunk in enumerate(chunks, 1):
            segments += _jpeg_segment(0xE2, _ICC_HEADER + bytes([number, len(chunks)]) + chunk)
    at = 2
    if data[2:4] == b"\xff\xe0":
        at += 2 + struct.unpack_from(">H", data, 4)[0]
    return data[:at] + segments + data[at:]


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _webp_with(
    data: bytes, icc_profile: bytes | None, exif: bytes | None, width: int, height: int, alpha: bool
) -> bytes:
    """The extended WebP layout: VP8X (which says what the file holds), ICCP, the image chunks, EXIF."""
    image = b"".join(
        _riff_chunk(fourcc, data[start:end])
        for fourcc, start, end in _riff_chunks(data)
        if fourcc not in (b"VP8X", b"ICCP", b"EXIF")
    )
    flags = (0x20 if icc_profile else 0) | (0x10 if alpha else 0) | (0x08 if exif else 0)
    canvas = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = _riff_chunk(b"VP8X", canvas)
    body += (_riff_chunk(b"ICCP", icc_profile) if icc_profile else b"") + image
    body += _riff_chunk(b"EXIF", exif) if exif else b""
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _riff_chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


def _tiff_with(data: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """A TIFF with IFD0 rewritten at its end: the entries OpenCV wrote, plus the profile (tag 34675) and the EXIF
    (its IFD0's EXIF tags, with the EXIF and GPS IFDs). The old IFD stays in the file unreferenced; the pixel data
    does not move."""
    if not (icc_profile or exif):
        return data
    order, ifd, entries = _ifd0(data)
    out = bytearray(data)
    ifd0 = {tag: data[at - 8 : at + 4] for tag, _, _, at in entries}
    if exif:
        copied = _tiff_exif_entries(exif, order, out) or {}
        ifd0 |= {tag: entry for tag, entry in copied.items() if tag not in ifd0}
    if icc_profile:
        out += b"\x00" * (len(out) & 1)
        ifd0[_TAG_ICC] = struct.pack(order + "HHII", _TAG_ICC, _TIFF_UNDEFINED, len(icc_profile), len(out))
        out += icc_profile
    next_ifd = data[ifd + 2 + 12 * len(entries) : ifd + 6 + 12 * len(entries)]
    struct.pack_into(order + "I", out, 4, _write_ifd(out, order, ifd0, next_ifd))
    return bytes(out)
