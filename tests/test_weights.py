"""The weights resolver and checkpoints: pinned downloads, cache verification, offline messages, both formats."""

from __future__ import annotations

import io
import urllib.error

import pytest
import torch

from cliplit.core import weights
from cliplit.core.errors import CliplitError
from cliplit.core.weights import RELEASED, WeightsError, resolve_weights, sha256_of
from cliplit.train.checkpoint import load_enhancer, save_enhancer
from cliplit.train.network import LightMapNet


def test_released_names_are_pinned_to_the_shared_checksums(released_weights, init_weights):
    assert RELEASED["clip-lit"].sha256 == sha256_of(released_weights)
    assert RELEASED["clip-lit-init"].sha256 == sha256_of(init_weights)
    for release in RELEASED.values():
        assert weights.OFFICIAL_COMMIT in release.url and release.url.endswith(release.repo_path)


def test_names_resolve_from_the_verified_cache(cliplit_home):
    assert resolve_weights("clip-lit") == cliplit_home / "weights" / "enhancement_model.pth"
    assert resolve_weights("clip-lit-init").name == "init_enhancement_model.pth"


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path))
    return tmp_path


def _serve(monkeypatch, payload: bytes | Exception, seen: list[str]):
    def fake_urlopen(url, timeout):
        seen.append(url)
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)

    monkeypatch.setattr(weights.urllib.request, "urlopen", fake_urlopen)


def test_download_is_verified_then_cached(empty_home, monkeypatch, released_weights):
    seen: list[str] = []
    _serve(monkeypatch, released_weights.read_bytes(), seen)
    path = resolve_weights("clip-lit")
    assert seen == [RELEASED["clip-lit"].url]
    assert path == empty_home / "weights" / "enhancement_model.pth"
    assert sha256_of(path) == RELEASED["clip-lit"].sha256
    resolve_weights("clip-lit")
    assert len(seen) == 1, "a cached, verified file must not be downloaded again"


def test_a_corrupt_download_is_refused_and_leaves_nothing(empty_home, monkeypatch):
    _serve(monkeypatch, b"<html>rate limited</html>", [])
    with pytest.raises(WeightsError, match="SHA-256"):
        resolve_weights("clip-lit")
    assert not any((empty_home / "weights").iterdir())


def test_offline_error_says_where_to_put_the_file(empty_home, monkeypatch):
    _serve(monkeypatch, urllib.error.URLError("no route to host"), [])
    with pytest.raises(WeightsError) as info:
        resolve_weights("clip-lit-init")
    message = str(info.value)
    assert RELEASED["clip-lit-init"].url in message
    assert str(empty_home / "weights" / "init_enhancement_model.pth") in message
    with pytest.raises(WeightsError, match="downloads are disabled"):
        resolve_weights("clip-lit", download=False)


def test_a_tampered_cache_file_is_reported(empty_home):
    (empty_home / "weights").mkdir()
    (empty_home / "weights" / "enhancement_model.pth").write_bytes(b"not the model")
    with pytest.raises(WeightsError, match="delete it"):
        resolve_weights("clip-lit")


def test_paths_must_exist(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(tmp_path / "missing.pth")


def test_released_and_cliplit_checkpoints_load_into_the_same_network(released_weights, tmp_path):
    released = load_enhancer(released_weights)
    assert released.model.padding == "test" and not released.model.training
    assert released.sha256 == RELEASED["clip-lit"].sha256
    saved = save_enhancer(released.model, tmp_path / "mine.pth", padding="test", source={"trained_from": "x"})
    mine = load_enhancer(saved)
    assert mine.source == {"trained_from": "x"} and mine.name == "mine"
    for key, value in released.model.state_dict().items():
        assert torch.equal(value, mine.model.state_dict()[key])
    assert load_enhancer(saved, padding="train").model.padding == "train"


def test_checkpoint_errors_name_the_problem(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a CLIP-LIT checkpoint"):
        load_enhancer(tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CliplitError, match="not a zip-format PyTorch checkpoint"):
        load_enhancer(tmp_path / "text.pth")
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not hold CLIP-LIT enhancer weights"):
        load_enhancer(tmp_path / "other.pth")
    with pytest.raises(ValueError, match="padding variant"):
        save_enhancer(LightMapNet(), tmp_path / "x.pth", padding="same")
