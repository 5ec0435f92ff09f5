"""16-bit photos are enhanced at 16 bits: how close the 16-bit path comes to FP32, and that it agrees with 8 bits.

The photos are a crop of a real backlit photo in two 16-bit forms: ``uint8 · 257`` (an 8-bit photo saved as 16-bit,
whose float input is exactly the 8-bit path's) and a genuinely 16-bit one (the crop smoothed in float, so it has the
levels between 8-bit ones that 16-bit files exist for). The FP32 reference is the float model's own ``enhanced``
output for the 16-bit input, before any rounding: the 16-bit path should be that, rounded to 16 bits (about 101 dB
for uniform rounding error), where the 8-bit path is that rounded to 8 bits (about 59 dB).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SMALL_PHOTO, photo

from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image, to_bgr8
from cliplit.core.metrics import psnr
from cliplit.runtime.backends import open_backend
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.tiling import open_tiling

#: the 16-bit path against FP32: 16-bit rounding alone gives 101 dB; the margin is float32 arithmetic
MIN_16_BIT_DB = 95.0


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return read_image(photo(SMALL_PHOTO))[300:396, 200:328]


@pytest.fixture(scope="module")
def deep(crop) -> np.ndarray:
    """A genuinely 16-bit crop: smoothed in float, so most of its levels lie between the 8-bit ones."""
    smooth = cv2.GaussianBlur(crop.astype(np.float32) * 257.0, (0, 0), 1.5)
    return np.clip(smooth + 0.5, 0, 65535).astype(np.uint16)


def fp32_reference(enhancer: Enhancer, frame16: np.ndarray) -> np.ndarray:
    """The float model's enhanced output for ``frame16`` as H×W×3 BGR float in [0, 1], unrounded."""
    rgb = (frame16[:, :, ::-1].astype(np.float32) / np.float32(65535.0)).transpose(2, 0, 1)[None]
    return enhancer.backend.run(np.ascontiguousarray(rgb))["enhanced"][0][::-1].transpose(1, 2, 0)


def test_the_16_bit_path_is_fp32_rounded_to_16_bits(crop, deep, float_onnx):
    with Enhancer.open(float_onnx, "onnxruntime") as enhancer:
        for label, frame16 in (("uint8*257", crop.astype(np.uint16) * 257), ("genuine 16-bit", deep)):
            reference = fp32_reference(enhancer, frame16)
            sixteen = enhancer.enhance_16bit(frame16)
            eight = enhancer.enhance(frame16)  # what a 16-bit photo got before: rounded to 8 bits on the way in
            assert sixteen.dtype == np.uint16 and eight.dtype == np.uint8
            db16 = psnr(sixteen / 65535.0, reference, peak=1.0)
            db8 = psnr(eight / 255.0, reference, peak=1.0)
            agreement = psnr(to_bgr8(sixteen), eight)
            print(
                f"\n{label}: 16-bit path {db16:.1f} dB, 8-bit path {db8:.1f} dB against FP32; 16-bit rounded to 8 "
                f"vs the 8-bit path {agreement:.1f} dB"
            )
            assert db16 >= MIN_16_BIT_DB, f"{label}: {db16:.1f} dB"
            assert db16 >= db8 + 30.0, f"{label}: 16 bits should keep far more than 8 ({db16:.1f} vs {db8:.1f} dB)"
        # an 8-bit photo stored as 16-bit: the 16-bit path, rounded to 8 bits, is the 8-bit path within a level
        sixteen = enhancer.enhance_16bit(crop.astype(np.uint16) * 257)
        assert np.abs(to_bgr8(sixteen).astype(int) - enhancer.enhance(crop)).max() <= 1


def test_tiled_and_scaled_16_bit_frames_apply_the_light_map_to_all_16_bits(deep, float_onnx):
    """Tiles and --scale give the light map in float and divide it into the 16-bit frame: still 16-bit precision."""
    untiled = Enhancer(open_backend(float_onnx, "onnxruntime")).enhance_16bit(deep)
    tiled = Enhancer(open_backend(float_onnx, "onnxruntime"), tiling=open_tiling(float_onnx, tile=(40, 50)))
    result = tiled.enhance_16bit(deep)
    # the tiled graphs see the 8-bit rounding of the frame: the light map moves a little, the detail stays 16-bit
    db = psnr(result / 65535.0, untiled / 65535.0, peak=1.0)
    print(f"\ntiled 16-bit vs untiled 16-bit: {db:.1f} dB")
    assert db >= 60.0 and len(np.unique(result)) > 4 * len(np.unique(to_bgr8(result)))
    for options in ({"scale": 0.5}, {"scale": 0.5, "upsample": "guided"}):
        scaled = Enhancer(open_backend(float_onnx, "onnxruntime"), **options)
        sixteen = scaled.enhance_16bit(deep)
        assert psnr(to_bgr8(sixteen), scaled.enhance(deep)) >= 45.0, options
        assert len(np.unique(sixteen)) > 4 * len(np.unique(to_bgr8(sixteen))), options


def test_an_8_bit_model_says_why_and_refuses_16_bits(deep, uint8_onnx):
    with Enhancer.open(uint8_onnx, "onnxruntime") as enhancer:
        assert enhancer.reason_for_8bit() == "the model's input and output are 8-bit (uint8 I/O)"
        with pytest.raises(CliplitError, match="16-bit enhancement needs a float-I/O model"):
            enhancer.enhance_16bit(deep)
