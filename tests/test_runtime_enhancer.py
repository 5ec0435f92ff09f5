"""The Enhancer API: the official references through ONNX Runtime, batching, conversions, --scale, smoothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import PHOTO_NAMES, SMALL_PHOTO, photo, reference

from cliplit.core.contract import MIN_SIDE
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image, to_bgr8
from cliplit.core.metrics import psnr
from cliplit.runtime.backends.base import Backend
from cliplit.runtime.enhancer import Enhancer

LARGE_PHOTOS = [name for name in PHOTO_NAMES if name != SMALL_PHOTO]  # 1427x2048 up to 2048x1536


@pytest.fixture(scope="module")
def enhancer(float_onnx) -> Enhancer:
    return Enhancer.open(float_onnx)


def crop(name: str = SMALL_PHOTO, height: int = 96, width: int = 128) -> np.ndarray:
    image = read_image(photo(name))
    return np.ascontiguousarray(image[200 : 200 + height, 100 : 100 + width])


def test_reproduces_the_official_output_of_the_small_photo(enhancer):
    assert psnr(enhancer.enhance(read_image(photo(SMALL_PHOTO))), read_image(reference(SMALL_PHOTO))) >= 50.0


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE_PHOTOS)
def test_reproduces_the_official_outputs_of_the_large_photos(enhancer, name):
    assert psnr(enhancer.enhance(read_image(photo(name))), read_image(reference(name))) >= 50.0


def test_uint8_model_reproduces_the_official_output(uint8_onnx):
    enhancer = Enhancer.open(uint8_onnx)
    assert enhancer.io == "uint8"
    assert psnr(enhancer.enhance(read_image(photo(SMALL_PHOTO))), read_image(reference(SMALL_PHOTO))) >= 50.0


def test_batch_equals_frame_by_frame_and_keeps_order(enhancer):
    frames = [crop(), crop()[:, ::-1].copy(), crop(height=50, width=70), crop()]
    batched = enhancer.enhance_batch(frames)
    assert [f.shape for f in batched] == [f.shape for f in frames]
    for got, frame in zip(batched, frames, strict=True):
        assert np.abs(got.astype(int) - enhancer.enhance(frame)).max() <= 1


def test_converts_grey_alpha_and_16_bit_frames(enhancer):
    bgr = crop()
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    deep = bgr.astype(np.uint16) * 257
    assert np.array_equal(enhancer.enhance(grey), enhancer.enhance(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))
    assert np.array_equal(enhancer.enhance(bgra), enhancer.enhance(bgr))
    assert np.array_equal(enhancer.enhance(deep), enhancer.enhance(bgr))
    assert np.array_equal(to_bgr8(deep), bgr)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int8, bool])
def test_frames_that_are_not_8_or_16_bit_are_refused(enhancer, dtype):
    """A float32 0..255 frame used to come back almost white (read as 0..1 and clipped); now it is an error."""
    frame = crop().astype(dtype)
    with pytest.raises(CliplitError, match=rf"frame 1 has pixel type {np.dtype(dtype).name}.*takes uint8 BGR"):
        enhancer.enhance_batch([crop(), frame])


def test_smallest_frame_runs_and_smaller_is_a_clear_error(enhancer):
    assert enhancer.enhance(crop(height=MIN_SIDE, width=MIN_SIDE)).shape == (MIN_SIDE, MIN_SIDE, 3)
    with pytest.raises(CliplitError, match="too small"):
        enhancer.enhance(crop(height=1, width=40))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 0}, r"--scale must be in \(0, 1\], got 0"),
        ({"scale": 1.5}, r"--scale must be in \(0, 1\], got 1.5"),
        ({"temporal_smoothing": 1.0}, r"--temporal-smoothing must be in \[0, 1\), got 1.0"),
        ({"temporal_smoothing": -0.1}, r"--temporal-smoothing must be in \[0, 1\), got -0.1"),
        ({"upsample": "nn"}, "unknown upsampling 'nn'; expected one of bilinear, guided"),
    ],
)
def test_bad_options_are_clear_errors(float_onnx, options, message):
    with pytest.raises(CliplitError, match=message):
        Enhancer.open(float_onnx, **options)


def test_uint8_model_refuses_light_map_options(uint8_onnx):
    with pytest.raises(CliplitError, match="float-I/O model"):
        Enhancer.open(uint8_onnx, scale=0.5)


class Recording(Backend):
    """Wraps a backend and records the shapes it was given."""

    name = "recording"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.io)
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.shapes.append(batch.shape)
        return self.inner.run(batch)


@pytest.mark.parametrize("upsample", ["bilinear", "guided"])
def test_scale_runs_the_network_smaller_and_stays_close(enhancer, upsample):
    frame = crop(height=240, width=320)
    backend = Recording(enhancer.backend)
    scaled = Enhancer(backend, scale=0.5, upsample=upsample)
    out = scaled.enhance(frame)
    assert backend.shapes == [(1, 3, 120, 160)]
    assert out.shape == frame.shape
    # On the released photos S = 0.5 measures 34-41 dB against full resolution (docs/runtime.md).
    assert 28.0 < psnr(out, enhancer.enhance(frame)) < 60.0


class ConstantLight(Backend):
    """A float-I/O backend whose light map is a given constant per call: the smoothing arithmetic in isolation."""

    name = "constant"

    def __init__(self, values: list[float]) -> None:
        super().__init__("float")
        self.values = iter(values)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        n, _, h, w = batch.shape
        light = np.stack([np.full((1, h, w), next(self.values), np.float32) for _ in range(n)])
        return {"enhanced": np.clip(batch / light, 0, 1), "light_map": light}


def test_temporal_smoothing_is_an_ema_of_the_light_map_reset_on_cuts():
    flat = np.full((36, 64, 3), 60, np.uint8)
    other = crop(LARGE_PHOTOS[0], height=36, width=64)[::-1].copy()
    enhancer = Enhancer(ConstantLight([0.5, 1.0, 1.0, 0.4]), temporal_smoothing=0.75)
    outputs = enhancer.enhance_batch([flat, flat, flat])
    expected_light = [0.5, 0.75 * 0.5 + 0.25 * 1.0, 0.75 * (0.75 * 0.5 + 0.25) + 0.25 * 1.0]
    for out, light in zip(outputs, expected_light, strict=True):
        assert np.abs(out.astype(int) - np.floor(min(60 / 255 / light, 1.0) * 255 + 0.5)).max() <= 1
    cut = enhancer.enhance(other)  # another picture: the average restarts from this frame's 0.4
    want = np.floor(np.minimum(other / 255 / np.float32(0.4), 1.0) * 255 + 0.5)
    assert np.abs(cut.astype(int) - want).max() <= 1
    assert enhancer.smoother.cuts == 1


class Asynchronous(Backend):
    """A backend with TensorRT's submit/wait interface; records the order of calls."""

    name = "async"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.io)
        self.inner = inner
        self.calls: list[str] = []
        self.handles = 0

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise AssertionError("the enhancer must use submit/wait when the backend has them")

    def submit(self, batch: np.ndarray) -> tuple[int, dict[str, np.ndarray]]:
        self.handles += 1
        self.calls.append(f"submit {self.handles}")
        return self.handles, self.inner.run(batch)

    def wait(self, handle: tuple[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        self.calls.append(f"wait {handle[0]}")
        return handle[1]


def test_submit_and_collect_use_an_asynchronous_backend(enhancer):
    backend = Asynchronous(enhancer.backend)
    frames = [crop(), crop(height=40, width=40)]
    asynchronous = Enhancer(backend)
    first, second = asynchronous.submit(frames[:1]), asynchronous.submit(frames[1:])
    results = asynchronous.collect(first) + asynchronous.collect(second)
    assert backend.calls == ["submit 1", "submit 2", "wait 1", "wait 2"]
    for got, frame in zip(results, frames, strict=True):
        assert np.array_equal(got, enhancer.enhance(frame))
