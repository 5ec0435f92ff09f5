"""Reading images: the EXIF orientation is applied as viewers do, and the other conversions stay as they were.

The JPEGs are made here: OpenCV encodes the stored (sideways or mirrored) pixels, and the test inserts an EXIF APP1
segment with the orientation tag by hand, as a camera writes it. What a viewer shows for each tag is spelled out
below from the EXIF specification (where the stored first row and first column end up), independently of OpenCV.
"""

from __future__ import annotations

import struct
import sys
import zlib

import cv2
import numpy as np
import pytest

from cliplit.core.errors import CliplitError
from cliplit.core.images import photo_losses, read_image, read_photo, write_image

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


# --- whole photos: alpha, 16 bits, colour profile and EXIF carried into the outputs that hold them -----------------


def display_p3_like_profile() -> bytes:
    """An ICC profile that is not sRGB (a wide-gamut RGB made with LittleCMS through Pillow), as phones embed."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
    return profile.tobytes()


def camera_exif(orientation: int, byte_order: str = "MM") -> bytes:
    """An EXIF block as a phone writes it: Make in IFD0, the orientation tag, an exposure time in the EXIF IFD;
    big-endian (MM) as Apple's and Nikon's cameras write it, or little-endian (II) as Canon's do."""
    from PIL import Image, TiffImagePlugin

    exif = Image.Exif()
    exif.endian = "<" if byte_order == "II" else ">"
    exif[0x010F] = "Apple"
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x829A] = TiffImagePlugin.IFDRational(1, 250)
    data = exif.tobytes()
    assert data[6:8] == byte_order.encode()
    return data


def pillow_read(path):
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.info.get("icc_profile"), image.getexif(), image.mode


@pytest.mark.parametrize(
    ("suffix", "depth"),
    [(".png", np.uint8), (".tif", np.uint8), (".webp", np.uint8), (".png", np.uint16), (".tif", np.uint16)],
)
def test_alpha_comes_back_bit_exact(suffix, depth, tmp_path):
    rng = np.random.default_rng(1)
    top = 256 if depth == np.uint8 else 65536
    stored = rng.integers(0, top, (12, 16, 4)).astype(depth)
    assert cv2.imwrite(str(tmp_path / f"in{suffix}"), stored, [cv2.IMWRITE_WEBP_QUALITY, 101])
    # OpenCV's own reading of an 8-bit RGBA TIFF scales the colour by the alpha; the alpha comes through as stored
    decoded = cv2.imread(str(tmp_path / f"in{suffix}"), cv2.IMREAD_UNCHANGED)
    photo = read_photo(tmp_path / f"in{suffix}")
    assert photo.alpha is not None and np.array_equal(photo.alpha, stored[:, :, 3])
    assert photo.pixels.dtype == depth and np.array_equal(photo.pixels, decoded[:, :, :3])
    out = write_image(tmp_path / f"out{suffix}", photo)
    assert photo_losses(photo, out) == []
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == depth and np.array_equal(back[:, :, 3], stored[:, :, 3])
    assert np.array_equal(back, decoded)
    assert pillow_read(out)[2] in ("RGBA", "RGBA;16"), "readers other than OpenCV see the alpha channel"


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_dropped_by_a_format_without_it_is_said(suffix, tmp_path):
    stored = np.dstack([quadrants(), np.full((48, 80), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "in.png"), stored)
    photo = read_photo(tmp_path / "in.png")
    out = write_image(tmp_path / f"out{suffix}", photo)
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (48, 80, 3)
    name = "JPEG" if suffix == ".jpg" else "BMP"
    assert photo_losses(photo, out) == [f"alpha channel dropped: {name} has none"]


def test_16_bit_stays_16_bit_in_png_and_tiff_and_says_so_elsewhere(tmp_path):
    stored = (np.arange(12 * 16 * 3, dtype=np.uint32).reshape(12, 16, 3) * 113 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "in.png"), stored)
    photo = read_photo(tmp_path / "in.png")
    assert photo.pixels.dtype == np.uint16 and np.array_equal(photo.pixels, stored)
    for suffix in (".png", ".tif"):
        assert np.array_equal(
            cv2.imread(str(write_image(tmp_path / f"o{suffix}", photo)), cv2.IMREAD_UNCHANGED), stored
        )
    out = write_image(tmp_path / "o.jpg", photo)
    assert photo_losses(photo, out) == ["16-bit input written as 8-bit: JPEG holds 8 bits per channel"]
    assert np.abs(cv2.imread(str(out)).astype(int) - read_image(tmp_path / "in.png")).mean() < 3


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
@pytest.mark.parametrize("byte_order", ["II", "MM"])
def test_colour_profile_and_exif_survive_with_the_orientation_reset(suffix, byte_order, tmp_path):
    from PIL import Image

    profile = display_p3_like_profile()
    stored = quadrants()
    source = tmp_path / "phone.jpg"
    Image.fromarray(stored[:, :, ::-1]).save(source, quality=95, icc_profile=profile, exif=camera_exif(6, byte_order))
    photo = read_photo(source)
    assert photo.icc_profile == profile
    shown = DISPLAYED[6](stored)
    assert np.abs(photo.pixels.astype(int) - shown).mean() < 4.0, "turned upright on read"
    out = write_image(tmp_path / f"out{suffix}", photo)
    assert photo_losses(photo, out) == []
    icc, exif, _ = pillow_read(out)
    assert icc == profile
    assert exif.get(0x010F) == "Apple" and exif.get(0x0112, 1) == 1
    assert float(exif.get_ifd(0x8769)[0x829A]) == pytest.approx(1 / 250)
    # read back: upright already, so the (reset) tag turns nothing, and the profile comes along again
    again = read_photo(out)
    assert again.pixels.shape == shown.shape and again.icc_profile == profile


def test_exif_thumbnail_of_the_unenhanced_picture_is_not_carried(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif.get_ifd(0x1)  # IFD1: where a camera puts the thumbnail
    data = bytearray(exif.tobytes()[6:])
    order = "<" if data[:2] == b"II" else ">"
    (ifd0,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, ifd0)
    next_field = ifd0 + 2 + 12 * count
    ifd1 = len(data)
    data += struct.pack(order + "HHHII", 1, 0x0103, 3, 1, 6) + struct.pack(order + "I", 0)  # Compression = JPEG
    struct.pack_into(order + "I", data, next_field, ifd1)
    source = tmp_path / "thumb.jpg"
    Image.fromarray(quadrants()).save(source, exif=b"Exif\x00\x00" + bytes(data))
    carried = read_photo(source).exif
    assert carried is not None and struct.unpack_from(order + "I", carried, next_field) == (0,)
    assert carried[:next_field] == bytes(data[:next_field])


def test_damaged_metadata_leaves_the_pixels_readable(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), quadrants())
    data = (tmp_path / "a.png").read_bytes()
    body = b"iCCP" + b"name\x00\x00not zlib"  # a profile chunk whose profile cannot be inflated
    broken = data[:33] + struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body)) + data[33:]
    (tmp_path / "b.png").write_bytes(broken)
    photo = read_photo(tmp_path / "b.png")
    assert photo.icc_profile is None and np.array_equal(photo.pixels, quadrants())


def test_heic_without_pillow_heif_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    (tmp_path / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(
        CliplitError,
        match=r"phone\.heic: reading \.heic images needs Pillow and pillow-heif: pip "
        r"install 'cliplit\[heif\]'",
    ):
        read_image(tmp_path / "phone.heic")


def test_heic_from_a_phone_is_read_upright_with_its_profile(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra is not installed")
    from PIL import Image

    pillow_heif.register_heif_opener()
    profile = display_p3_like_profile()
    stored = quadrants()
    source = tmp_path / "phone.heic"
    Image.fromarray(stored[:, :, ::-1]).save(source, quality=-1, icc_profile=profile, exif=camera_exif(6))
    photo = read_photo(source)
    assert photo.icc_profile == profile and photo.pixels.shape == (80, 48, 3)
    assert np.abs(photo.pixels.astype(int) - DISPLAYED[6](stored)).mean() < 6.0
    icc, exif, _ = pillow_read(write_image(tmp_path / "out.jpg", photo))
    assert icc == profile and exif.get(0x010F) == "Apple" and exif.get(0x0112, 1) == 1
