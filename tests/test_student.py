"""The shipped real-time student clip-lit-rt: resolves offline from the package, exports under the same contract down
to 2x2, and reproduces the official CLIP-LIT outputs of the six evaluation photos within the stated fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PHOTO_NAMES, SHARED, photo, reference

from cliplit.benchmarks.student import fidelity
from cliplit.core import weights
from cliplit.core.contract import META_FIDELITY, META_TEACHER, MIN_SIDE
from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.core.weights import BUNDLED, WeightsError, resolve_weights, sha256_of
from cliplit.runtime.backends.onnxruntime import onnx_metadata
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.models import ensure_onnx
from cliplit.train.checkpoint import load_enhancer
from cliplit.train.student import StudentNet

# The goals for the shipped student, against the official outputs at full resolution, and what the shipped
# weights reach (measured 43.25 dB mean, 37.39 dB worst; per photo in docs/distill.md): the mean goal is met, the
# worst photo (the skyline) is 0.6 dB short. Asserted as reached, a little under the measurement (other CPUs' kernels
# round differently), so any regression fails.
GOAL_MEAN_DB = 42.0
GOAL_WORST_DB = 38.0
REACHED_MEAN_DB = 43.2
REACHED_WORST_DB = 37.3
assert REACHED_MEAN_DB >= GOAL_MEAN_DB and REACHED_WORST_DB < GOAL_WORST_DB  # keep in step with docs/distill.md


def test_resolves_offline_from_the_package(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("clip-lit-rt must not be downloaded")

    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)
    path = resolve_weights("clip-lit-rt")
    assert path == BUNDLED["clip-lit-rt"].path and path.stat().st_size < 1_000_000
    assert (path.parent / "LICENSE-S-Lab.txt").is_file()
    checkpoint = load_enhancer("clip-lit-rt")
    assert isinstance(checkpoint.model, StudentNet) and checkpoint.name == "clip-lit-rt"
    assert checkpoint.source["distilled_from"] == "clip-lit"


def test_a_damaged_package_file_is_refused(tmp_path, monkeypatch):
    bundle = BUNDLED["clip-lit-rt"]
    assert sha256_of(bundle.path) == bundle.sha256
    altered = tmp_path / bundle.filename
    altered.write_bytes(bundle.path.read_bytes()[:-1])
    monkeypatch.setattr(weights, "BUNDLED_DIR", tmp_path)
    with pytest.raises(WeightsError, match="reinstall"):
        resolve_weights("clip-lit-rt")
    altered.unlink()
    with pytest.raises(WeightsError, match="missing"):
        resolve_weights("clip-lit-rt")


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    return Enhancer.open("clip-lit-rt", "onnxruntime")  # exported (and verified against PyTorch) on first use


def test_export_carries_teacher_and_fidelity_and_runs_down_to_the_minimum():
    model = ensure_onnx("clip-lit-rt", "uint8")
    metadata = onnx_metadata(model)
    assert metadata[META_TEACHER] == "clip-lit"
    assert "worst_db" in metadata[META_FIDELITY]
    student = load_enhancer("clip-lit-rt").model
    uint8 = Enhancer.open(model, "onnxruntime")
    rng = np.random.default_rng(5)
    for height, width in ((MIN_SIDE, MIN_SIDE), (MIN_SIDE, 7), (5, 3), (31, 45)):
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        rgb = torch.from_numpy(frame[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            expected = torch.clamp(rgb / torch.clamp(student(rgb), min=1e-6), 0, 1)
        expected = np.floor(expected[0].permute(1, 2, 0).numpy()[..., ::-1] * 255.0 + 0.5)
        assert np.abs(uint8.enhance(frame).astype(float) - expected).max() <= 1.0


def test_fidelity_on_the_six_photos(enhancer):
    for name in PHOTO_NAMES:  # a missing reference is a failure, not a skip
        photo(name), reference(name)
    scores = fidelity(enhancer, SHARED / "input", SHARED / "reference")
    assert sorted(scores) == sorted(PHOTO_NAMES)
    values = list(scores.values())
    assert np.mean(values) >= REACHED_MEAN_DB, scores
    assert min(values) >= REACHED_WORST_DB, scores


def test_fidelity_is_the_same_through_pytorch(enhancer):
    """The runtime's ONNX model and the PyTorch student agree on a real photo (no drift in the export)."""
    name = min(PHOTO_NAMES, key=lambda n: read_image(photo(n)).size)
    image = read_image(photo(name))
    student = load_enhancer("clip-lit-rt").model
    rgb = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        out = torch.clamp(rgb / torch.clamp(student(rgb), min=1e-6), 0, 1)[0].permute(1, 2, 0).numpy()[..., ::-1]
    ours = np.clip(np.floor(out * 255.0 + 0.5), 0, 255).astype(np.uint8)
    assert psnr(ours, enhancer.enhance(image)) >= 55.0
