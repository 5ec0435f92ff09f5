"""Reading images: the EXIF orientation is applied as viewers do, and the other conversions stay as they were.

The JPEGs are made here: OpenCV encodes the stored (sideways or mirrored) pixels, and the test inserts an EXIF APP1
segment with the orientation tag by hand, as a camera writes it. What a viewer shows for each tag is spelled out
below from the EXIF specification (where the stored first row and first column end up), independently of OpenCV.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from cliplit.core.images import read_image, write_image

# Displayed image as a function of the stored one, per EXIF orientation (TIFF 6.0 / EXIF 2.3, tag 0x0112):
# 1 as stored, 2 mirrored left-right, 3 turned 180°, 4 mirrored top-bottom, 5 transposed (stored rows become
# columns), 6 turned 90° clockwise, 7 transverse (the transpose across the other diagonal), 8 turned 90° anticlockwise.
DISPLAYED = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],
    3: lambda s: s[::-1, ::-1],
    4: lambda s: s[::-1],
    5: lambda s: s.transpose(1, 0, 2),
    6: lambda s: s.transpose(1, 0, 2)[:, ::-1],
    7: lambda s: s[::-1, ::-1].transpose(1, 0, 2),
    8: lambda s: s.transpose(1, 0, 2)[::-1],
}


def exif_orientation_segment(orientation: int) -> bytes:
    """A JPEG APP1 segment holding a big-endian TIFF header and one IFD entry: Orientation (SHORT) = value."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)  # byte order, magic, offset of IFD0
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_orientation(stored: np.ndarray, orientation: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    data = encoded.tobytes()
    assert data[:2] == b"\xff\xd8"
    return data[:2] + exif_orientation_segment(orientation) + data[2:]


def quadrants(height: int = 48, width: int = 80) -> np.ndarray:
    """Four flat colours (JPEG keeps them within a few levels) so that any turn or mirror is obvious."""
    image = np.empty((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2 :] = (0, 255, 0)
    image[height // 2 :, : width // 2] = (0, 0, 255)
    image[height // 2 :, width // 2 :] = (255, 255, 255)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_on_read(orientation, tmp_path):
    stored = quadrants()
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(jpeg_with_orientation(stored, orientation))
    shown = np.ascontiguousarray(DISPLAYED[orientation](stored))
    image = read_image(path)
    assert image.shape == shown.shape
    # JPEG blurs the colour edges a little; a wrong turn or mirror puts whole quadrants 255 levels off.
    assert np.abs(image.astype(int) - shown).mean() < 4.0
    # The written output is upright pixels and carries no tag: reading it back gives the same picture.
    out = write_image(tmp_path / f"o{orientation}.png", image)
    assert np.array_equal(read_image(out), image)


def test_the_tag_is_what_turns_the_picture(tmp_path):
    """Controls: without the segment the JPEG reads as stored, and IMREAD_UNCHANGED (the old reader) ignores it."""
    stored = quadrants()
    path = tmp_path / "plain.jpg"
    assert cv2.imwrite(str(path), stored, [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert np.abs(read_image(path).astype(int) - stored).mean() < 4.0
    tagged = cv2.imdecode(np.frombuffer(jpeg_with_orientation(stored, 6), np.uint8), cv2.IMREAD_UNCHANGED)
    assert tagged.shape == stored.shape


@pytest.mark.parametrize(
    ("stored", "suffix"),
    [
        (np.full((6, 8), 51400, np.uint16), ".png"),  # 16-bit grey
        (np.dstack([np.full((6, 8), v, np.uint16) for v in (0, 32768, 65535)]), ".tif"),  # 16-bit colour
        (np.dstack([np.full((6, 8), v, np.uint8) for v in (10, 20, 30, 99)]), ".png"),  # alpha
        (np.full((6, 8), 77, np.uint8), ".png"),  # 8-bit grey
    ],
    ids=["grey16", "colour16", "bgra", "grey8"],
)
def test_depth_alpha_and_grey_are_converted_as_before(stored, suffix, tmp_path):
    path = tmp_path / f"in{suffix}"
    assert cv2.imwrite(str(path), stored)
    image = read_image(path)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    source = stored if stored.ndim == 3 else stored[:, :, None].repeat(3, axis=2)
    source = source[:, :, :3]
    if source.dtype == np.uint16:
        source = (source.astype(np.uint32) * 255 + 32767) // 65535
    assert np.array_equal(image, source)
