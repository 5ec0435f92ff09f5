"""Fidelity against the FP32 reference: the shared check frame, input layouts, 8-bit rounding and PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cliplit.benchmarks.fidelity import check_frame, compare, quantised_reference
from cliplit.core.contract import model_input_from_bgr, model_input_from_rgb


def test_check_frame_is_random_deterministic_per_size_and_bgr_uint8():
    frame = check_frame(12, 20)
    assert frame.shape == (1, 12, 20, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, check_frame(12, 20))
    assert not np.array_equal(frame[:, :10, :10], check_frame(10, 10))
    assert np.unique(frame).size > 200, "noise over the whole 8-bit range, not a constant frame"


def test_float_input_is_the_same_frame_as_rgb_over_255():
    frame = check_frame(4, 6)
    image = model_input_from_bgr("float", frame)
    assert image.shape == (1, 3, 4, 6) and image.dtype == np.float32
    # pixel (2, 3): channels reversed (BGR → RGB) and scaled
    assert image[0, :, 2, 3].tolist() == pytest.approx((frame[0, 2, 3, ::-1] / 255.0).tolist(), abs=1e-7)
    assert model_input_from_bgr("uint8", frame) is frame
    assert np.array_equal(model_input_from_rgb("float", frame[0, :, :, ::-1]), image)
    assert np.array_equal(model_input_from_rgb("uint8", frame[0, :, :, ::-1]), frame)
    with pytest.raises(ValueError):
        model_input_from_bgr("nv12", frame)


def test_quantised_reference_rounds_half_up_and_returns_bgr():
    rgb = np.zeros((1, 3, 1, 2), dtype=np.float32)
    rgb[0, 0] = [[1.0, 0.5 / 255]]  # red: 255, and exactly half a level (rounds up to 1)
    rgb[0, 2] = [[0.0, 0.49 / 255]]  # blue: 0, and just under half a level (rounds down to 0)
    frame = quantised_reference(rgb)
    assert frame.shape == (1, 1, 2, 3) and frame.dtype == np.uint8
    assert frame[0, 0, 0].tolist() == [0, 0, 255]  # B, G, R
    assert frame[0, 0, 1].tolist() == [0, 0, 1]


def test_identical_outputs_have_no_psnr_and_zero_difference():
    reference = np.random.default_rng(0).random((1, 3, 5, 7), dtype=np.float32)
    same_float = compare(reference.copy(), reference)
    assert (same_float.psnr_db, same_float.max_abs_diff, same_float.unit) == (None, 0.0, "[0,1]")
    same_uint8 = compare(quantised_reference(reference), reference)
    assert (same_uint8.psnr_db, same_uint8.max_abs_diff, same_uint8.unit) == (None, 0.0, "uint8 levels")


def test_one_level_off_in_one_pixel_gives_the_textbook_psnr():
    reference = np.full((1, 3, 4, 5), 100 / 255, dtype=np.float32)
    frame = quantised_reference(reference)
    frame[0, 1, 2, 0] += 1
    result = compare(frame, reference)
    mse = 1.0 / frame.size
    assert result.psnr_db == pytest.approx(10 * math.log10(255**2 / mse))
    assert result.max_abs_diff == 1.0


def test_float_outputs_are_compared_in_their_own_range():
    reference = np.full((1, 3, 2, 2), 0.5, dtype=np.float32)
    result = compare(reference + np.float32(0.01), reference)
    assert result.psnr_db == pytest.approx(40.0, abs=1e-3)  # 10·log10(1 / 0.01²)
    assert result.max_abs_diff == pytest.approx(0.01, abs=1e-6)
