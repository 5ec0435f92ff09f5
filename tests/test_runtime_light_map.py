"""Light-map upsampling (--scale) and temporal smoothing, on synthetic light maps with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SMALL_PHOTO, photo

from cliplit.core.images import read_image
from cliplit.runtime.temporal import LightMapSmoother, normalised_thumbnail, scene_change
from cliplit.runtime.upsample import bt601_luma, upsample_light_map


def edge_scene(height: int = 120, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A frame with a vertical dark/bright edge off the low-resolution grid, and a light map with the same edge."""
    frame = np.full((height, width, 3), 40, np.uint8)
    frame[:, 61:] = 200
    light = np.where(np.arange(width) < 61, 0.3, 0.9).astype(np.float32)
    return frame, np.broadcast_to(light, (height, width)).copy()


def test_same_size_map_is_returned_unchanged():
    frame, light = edge_scene()
    assert upsample_light_map(light, frame, "guided") is light


def test_smooth_maps_survive_bilinear_upsampling():
    frame = read_image(photo(SMALL_PHOTO))[:240, :320]
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    light = 0.4 + 0.3 * np.sin(xx / 50) * np.cos(yy / 70)
    small = cv2.resize(light, (80, 60), interpolation=cv2.INTER_AREA)
    up = upsample_light_map(small, frame, "bilinear")
    assert up.shape == light.shape and up.dtype == np.float32
    assert np.abs(up - light)[8:-8, 8:-8].max() < 0.02


def test_guided_upsampling_keeps_edges_that_bilinear_blurs():
    frame, light = edge_scene()
    small = cv2.resize(light, (40, 30), interpolation=cv2.INTER_AREA)
    bilinear = np.abs(upsample_light_map(small, frame, "bilinear") - light).mean()
    guided = np.abs(upsample_light_map(small, frame, "guided") - light).mean()
    assert guided < bilinear / 3


def test_constant_map_stays_constant_under_guided_upsampling():
    frame = read_image(photo(SMALL_PHOTO))[:120, :160]
    up = upsample_light_map(np.full((30, 40), 0.6, np.float32), frame, "guided")
    assert np.abs(up - 0.6).max() < 1e-5


def test_unknown_method_is_refused():
    frame, light = edge_scene()
    with pytest.raises(ValueError, match="unknown upsampling"):
        upsample_light_map(light[::2, ::2], frame, "nearest")


def test_the_guide_is_bt601_luma():
    pixel = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)  # blue, green, red
    assert np.allclose(bt601_luma(pixel), [[0.114, 0.587, 0.299]], atol=1e-6)


def test_smoother_averages_and_resets_on_size_change():
    frame = read_image(photo(SMALL_PHOTO))[:90, :160]
    smoother = LightMapSmoother(0.5)
    assert np.all(smoother.update(np.full((9, 16), 0.2, np.float32), frame) == pytest.approx(0.2))
    assert np.allclose(smoother.update(np.full((9, 16), 0.6, np.float32), frame), 0.4)
    assert np.allclose(smoother.update(np.full((18, 32), 0.8, np.float32), frame), 0.8)  # new size: restart
    smoother.reset()
    assert np.allclose(smoother.update(np.full((18, 32), 0.1, np.float32), frame), 0.1)


def test_moving_regions_take_the_new_light_map_at_once():
    """The motion gate: where the picture changed, no trail of the old light map; elsewhere, the average."""
    frame = read_image(photo(SMALL_PHOTO))[:90, :160]
    moved = frame.copy()
    moved[:, :60] = 255 - moved[:, :60]  # the left part changes completely
    smoother = LightMapSmoother(0.5)
    smoother.update(np.full((90, 160), 0.2, np.float32), frame)
    average = smoother.update(np.full((90, 160), 0.6, np.float32), moved)
    assert smoother.cuts == 0
    assert np.allclose(average[:, 70:], 0.4)  # static: A·0.2 + (1-A)·0.6
    assert np.mean(np.isclose(average[:, :55], 0.6)) > 0.9  # moved (a few unchanged mid-grey pixels may average)


def test_exposure_change_is_not_a_cut_but_new_content_is():
    frame = read_image(photo(SMALL_PHOTO))
    view = frame[100:280, 100:420]
    darker = (view * 0.6).astype(np.uint8)
    panned = frame[110:290, 112:432]
    unrelated = frame[500:680, 150:470][::-1]
    base = normalised_thumbnail(view)
    threshold = LightMapSmoother(0.5).scene_cut_threshold
    assert scene_change(base, normalised_thumbnail(darker)) < 0.1
    assert scene_change(base, normalised_thumbnail(panned)) < threshold
    assert scene_change(base, normalised_thumbnail(unrelated)) > threshold


def test_smoother_strength_is_validated():
    for strength in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            LightMapSmoother(strength)
