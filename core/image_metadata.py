"""The colour profile and EXIF of a photo's file, read from and written into its container by hand.

PNG chunks, JPEG segments, WebP chunks and TIFF tags, each following its container's specification: OpenCV decodes
and encodes the pixels, but its metadata API is new (4.12+) and does not cover TIFF, and Pillow cannot hold 16-bit
colour. Reading is forgiving (a damaged container around the metadata gives None, since OpenCV decoded the pixels);
writing adds to OpenCV's encoding. :mod:`cliplit.core.images` uses these for :class:`~cliplit.core.images.Photo`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import numpy as np

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


# --- metadata on read -------------------------------------------------------------------------------------------------


def read_metadata(data: bytes) -> tuple[bytes | None, bytes | None]:
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
            return chunks.get(b"ICCP"), tiff_block(chunks.get(b"EXIF"))
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
            exif = tiff_block(data[start:end])
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


def tiff_block(exif: bytes | None) -> bytes | None:
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


def upright_exif(exif: bytes | None) -> tuple[int, bytes | None]:
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
    return (orientation if 1 <= orientation <= 8 else 1), bytes(patched)  # EXIF defines 1-8


def exif_loss(exif: bytes, suffix: str) -> str | None:
    """Why an EXIF block cannot be written into a file of ``suffix`` that holds EXIF, or None when it can."""
    if suffix in (".jpg", ".jpeg") and len(_EXIF_HEADER + exif) > _JPEG_SEGMENT_MAX:
        return "larger than the 64 KiB a JPEG segment holds"
    if suffix in (".tif", ".tiff") and _tiff_exif_entries(exif, "<", bytearray()) is None:
        return "its IFDs are damaged"
    return None


# --- metadata on write ------------------------------------------------------------------------------------------------


def with_metadata(data: bytes, suffix: str, pixels: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """OpenCV's encoding ``data`` of ``pixels`` with a colour profile and an EXIF block added."""
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
