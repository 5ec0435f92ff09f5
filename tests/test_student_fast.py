"""The student's fast path (cliplit.runtime.student_fast) against the whole ONNX model it replaces.

The whole float model, rounded as the contract rounds, is the reference: the fast path must give the same frames
within one 8-bit level on real photos (held-out photos of ../shared/photos, not the evaluation set) and on odd sizes
down to the contract's 2×2 minimum, on each engine that offers it (ONNX Runtime's CPU provider, OpenVINO's CPU device
in FP32), and the enhancer must use it only where it applies, falling back to the whole model otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED

from cliplit.core.contract import model_input_from_bgr
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.light_map import to_uint8
from cliplit.runtime.backends import open_backend
from cliplit.runtime.backends.openvino import OpenVinoOptions
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.student_fast import pooled_frame
from cliplit.train.checkpoint import save_enhancer
from cliplit.train.student import StudentConfig, StudentNet

PHOTOS = SHARED.parent / "photos"
HELD_OUT = ["photo_005.jpg", "photo_021.jpg", "photo_063.jpg"]
ODD_SIZES = [(2, 2), (2, 3), (3, 5), (4, 4), (5, 2), (7, 9), (17, 31), (67, 93), (130, 257)]


def _held_out(name: str) -> np.ndarray:
    path = PHOTOS / name
    if not path.is_file():
        pytest.fail(f"held-out photo {path} is missing: tests need ../shared/photos beside the checkout")
    return read_image(path)


@pytest.fixture(scope="module")
def whole():
    """The whole student model on ONNX Runtime (the fallback), and a function giving its 8-bit frames."""
    with open_backend("clip-lit-rt", "onnxruntime") as backend:

        def enhanced(frame: np.ndarray) -> np.ndarray:
            output = backend.run(model_input_from_bgr("float", frame[None]))["enhanced"][0]
            return to_uint8(output[::-1].transpose(1, 2, 0))

        yield backend, enhanced


def _fast_backend(name: str) -> str | OpenVinoOptions:
    if name == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'cliplit[openvino]')")
        return OpenVinoOptions(precision="fp32")  # bf16, where native, is measured in docs/distill.md
    return name


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def fast(request):
    with Enhancer.open("clip-lit-rt", _fast_backend(request.param)) as enhancer:
        assert enhancer.fast is not None and "student fast path" in enhancer.describe()
        yield enhancer


def _assert_within_one_level(mine: np.ndarray, reference: np.ndarray) -> None:
    assert mine.shape == reference.shape and mine.dtype == np.uint8
    difference = np.abs(mine.astype(np.int16) - reference.astype(np.int16))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= max(2, difference.size // 10_000)  # float rounding only, rare


@pytest.mark.parametrize(("height", "width"), ODD_SIZES)
def test_pooling_is_the_students_ceil_mode_average_pooling(height, width):
    frame = np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    unit = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = torch.nn.functional.avg_pool2d(unit, 4, 4, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(pooled_frame(frame), expected[0].permute(1, 2, 0).numpy(), rtol=0, atol=2e-7)


@pytest.mark.parametrize("name", HELD_OUT)
def test_the_fast_path_equals_the_whole_model_on_real_photos(fast, whole, name):
    image = _held_out(name)
    _assert_within_one_level(fast.enhance(image), whole[1](image))


@pytest.mark.parametrize(("height", "width"), ODD_SIZES)
def test_the_fast_path_equals_the_whole_model_at_odd_sizes(fast, whole, height, width):
    image = _held_out(HELD_OUT[0])
    crop = np.ascontiguousarray(image[101 : 101 + height, 37 : 37 + width])
    _assert_within_one_level(fast.enhance(crop), whole[1](crop))


def test_batches_and_the_fallback_give_the_same_frames(fast, whole):
    image = _held_out(HELD_OUT[1])
    frames = [image[:240, :320], image[:240, 5:325], image[3:120, :97]]  # two sizes, in order; views, not copies
    fallback = Enhancer(whole[0])  # the whole model: the enhancer without the fast path
    assert fallback.fast is None
    for mine, reference in zip(fast.enhance_batch(frames), fallback.enhance_batch(frames), strict=True):
        _assert_within_one_level(mine, reference)


def test_a_student_distilled_with_other_widths_takes_the_fast_path_too(tmp_path):
    """A user's ``cliplit distill --widths 8 8 16 16`` student: its coefficients graph is built from the same
    templates (their shapes follow the weights), and its frames equal its whole model's within one level."""
    narrow = StudentNet(StudentConfig((8, 8, 16, 16)))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in narrow.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    weights = str(save_enhancer(narrow, tmp_path / "narrow.pth", source={"distilled_from": "clip-lit"}))
    image = _held_out(HELD_OUT[0])
    with Enhancer.open(weights, "onnxruntime") as fast, open_backend(weights, "onnxruntime") as backend:
        assert fast.fast is not None
        whole = Enhancer(backend)
        for frame in (image, image[:2, :2], image[5:72, 9:102]):
            frame = np.ascontiguousarray(frame)
            _assert_within_one_level(fast.enhance(frame), whole.enhance(frame))


def test_the_fast_path_is_used_only_where_it_applies(float_onnx):
    with Enhancer.open("clip-lit-rt", "onnxruntime", scale=0.5) as scaled:
        assert scaled.fast is None  # --scale needs the light map
    with Enhancer.open("clip-lit-rt", "onnxruntime", temporal_smoothing=0.5) as smoothed:
        assert smoothed.fast is None
    with Enhancer.open(float_onnx, "onnxruntime") as teacher:
        assert teacher.fast is None and "fast path" not in teacher.describe()
    with Enhancer.open("clip-lit-rt", "onnxruntime") as student:
        assert "fast path" in student.describe()
        frame16 = (_held_out(HELD_OUT[2])[:64, :80].astype(np.uint16) * 257).astype(np.uint16)
        assert student.enhance_16bit(frame16).dtype == np.uint16  # 16-bit frames run the whole model
    with Enhancer.open("clip-lit-rt", "onnxruntime", max_memory=1 << 10) as tight:
        assert tight.fast is not None
        with pytest.raises(CliplitError, match="runs whole frames"):  # the memory budget still holds
            tight.enhance(_held_out(HELD_OUT[2])[:64, :80])
