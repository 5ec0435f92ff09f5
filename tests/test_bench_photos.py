"""Fidelity on real photos in `cliplit bench`: the official outputs as the reference, and each backend's memory."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import SMALL_PHOTO, photo, reference

from cliplit.benchmarks.photos import FULL_FIDELITY_DB, measure_photos, reference_photos
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions


@pytest.fixture
def official(tmp_path):
    """A reference folder with the small official photo and its official output."""
    (tmp_path / "input").mkdir()
    (tmp_path / "reference").mkdir()
    shutil.copyfile(photo(SMALL_PHOTO), tmp_path / "input" / f"{SMALL_PHOTO}.jpg")
    shutil.copyfile(reference(SMALL_PHOTO), tmp_path / "reference" / f"{SMALL_PHOTO}.png")
    (tmp_path / "reference" / "unrelated_lightmap.npy").write_bytes(b"")  # not a photo: ignored
    return tmp_path


def test_photos_are_paired_with_their_official_outputs(official):
    (pair,) = reference_photos(official)
    assert pair.name == SMALL_PHOTO and pair.reference.name == f"{SMALL_PHOTO}.png"


def test_a_photo_without_its_official_output_or_no_photos_is_an_error(official, tmp_path):
    shutil.copyfile(photo(SMALL_PHOTO), official / "input" / "extra.jpg")
    with pytest.raises(CliplitError, match=r"extra\.jpg has no official output"):
        reference_photos(official)
    with pytest.raises(CliplitError, match="no photos in"):
        reference_photos(tmp_path / "empty")


@pytest.mark.parametrize("io", ["float", "uint8"])
def test_an_fp32_backend_reproduces_the_official_output_and_its_memory_is_measured(
    official, float_onnx, uint8_onnx, io
):
    model = float_onnx if io == "float" else uint8_onnx
    messages = []
    result = measure_photos(
        "onnxruntime",
        lambda: OnnxRuntimeBackend(model, OnnxRuntimeOptions()),
        reference_photos(official),
        messages.append,
    )
    assert result["status"] == "ok", result["reason"]
    (only,) = result["photos"]
    assert (only["width"], only["height"]) == (564, 845)
    assert result["min_psnr_db"] == result["max_psnr_db"] == only["psnr_db"] >= 70.0  # FP32: 94.5 dB measured
    assert result["full_fidelity"] and only["psnr_db"] > FULL_FIDELITY_DB
    assert result["peak_rss_mib"] > result["rss_before_mib"] > 0, "a 564x845 photo needs memory of its own"
    assert "1 photos" in messages[0]


def test_a_backend_that_fails_is_a_result_not_the_end_of_the_run(official):
    def broken():
        raise MemoryError("no room for 2048x1536")

    result = measure_photos("broken", broken, reference_photos(official), lambda _message: None)
    assert result["status"] == "error" and result["reason"] == "MemoryError: no room for 2048x1536"


def test_a_wrong_output_scores_low(official, float_onnx):
    class Darkened(OnnxRuntimeBackend):
        def run(self, batch):
            outputs = super().run(batch)
            return {**outputs, "enhanced": np.clip(outputs["enhanced"] - 0.05, 0, 1)}

    result = measure_photos("darkened", lambda: Darkened(float_onnx), reference_photos(official), lambda _m: None)
    assert result["min_psnr_db"] < 30 and not result["full_fidelity"]
