"""The ONNX export: dynamic shapes in both I/O variants, metadata, and its own verification step."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import SMALL_PHOTO, photo, reference

from cliplit.core import contract
from cliplit.core.atomic import OutputExistsError
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.weights import sha256_of
from cliplit.export.onnx_export import FloatIO, Uint8IO, export_onnx, verify_against_torch

# The sizes: the minimum, odd sizes that give uneven pooling bins, and full HD.
SIZES = [(contract.MIN_SIDE, contract.MIN_SIDE), (7, 9), (67, 93), (481, 643), (1001, 777), (1080, 1920)]


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_float_export_matches_pytorch_light_map(float_onnx, released_enhancer, size):
    rng = np.random.default_rng(sum(size))
    batch = 2 if size[0] * size[1] < 100_000 else 1
    image = rng.random((batch, 3, *size), dtype=np.float32)
    enhanced, light_map = _session(float_onnx).run(None, {"image": image})
    with torch.no_grad():
        expected_enhanced, expected_light = FloatIO(released_enhancer.model)(torch.from_numpy(image))
    assert light_map.shape == (batch, 1, *size) and enhanced.shape == image.shape
    assert np.abs(light_map - expected_light.numpy()).max() <= 1e-4
    # x / L amplifies the light map's ~1e-7 error where L is small; a quarter of one 8-bit level is still invisible.
    assert np.abs(enhanced - expected_enhanced.numpy()).max() <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_uint8_export_matches_pytorch_within_one_level(uint8_onnx, released_enhancer, size):
    rng = np.random.default_rng(sum(size) + 1)
    batch = 2 if size[0] * size[1] < 100_000 else 1
    frame = rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    (enhanced,) = _session(uint8_onnx).run(None, {"frame": frame})
    with torch.no_grad():
        expected = Uint8IO(released_enhancer.model)(torch.from_numpy(frame)).numpy()
    assert enhanced.dtype == np.uint8 and enhanced.shape == frame.shape
    assert np.abs(enhanced.astype(np.int16) - expected.astype(np.int16)).max() <= 1


@pytest.mark.parametrize("weights", ["clip-lit", "clip-lit-rt"])
def test_a_network_with_bgr_input_gives_the_same_light_map_from_bgr(weights):
    """What lets the uint8 graph skip its channel reorders: the teacher and the student alike."""
    from cliplit.train.checkpoint import load_enhancer

    model = load_enhancer(weights).model.eval()
    bgr_model = model.with_bgr_input()
    rgb = torch.from_numpy(read_image(photo(SMALL_PHOTO))[::4, ::4, ::-1].copy()).permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        expected, got = model(rgb), bgr_model(rgb.flip(1))
        assert not torch.equal(model(rgb.flip(1)), expected)  # the channel order does matter to the network
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)  # float summation order only
    assert torch.equal(model(rgb), expected)  # the original is untouched


def test_uint8_and_float_variants_agree_on_a_real_photo(float_onnx, uint8_onnx):
    """The in-graph BGR/uint8 pre- and post-processing equals doing it by hand around the float model."""
    bgr = read_image(photo(SMALL_PHOTO))[::4, ::4]
    (from_uint8,) = _session(uint8_onnx).run(None, {"frame": bgr[None]})
    image = np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    enhanced, _ = _session(float_onnx).run(None, {"image": image})
    by_hand = np.clip(np.floor(enhanced[0].transpose(1, 2, 0)[:, :, ::-1] * 255.0 + 0.5), 0, 255).astype(np.uint8)
    assert np.abs(from_uint8[0].astype(np.int16) - by_hand.astype(np.int16)).max() <= 1
    assert np.mean(from_uint8[0] != by_hand) < 1e-3


@pytest.mark.parametrize("io", contract.IO_VARIANTS)
def test_export_records_the_contract_in_metadata_and_dynamic_axes(io, float_onnx, uint8_onnx, released_weights):
    model = onnx.load(str(float_onnx if io == "float" else uint8_onnx))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    spec = contract.io_spec(io)
    assert meta[contract.META_IO] == io
    assert meta[contract.META_COLOUR_ORDER] == spec.colour_order
    assert meta[contract.META_LAYOUT] == spec.input_layout
    assert meta[contract.META_WEIGHTS_SHA256] == sha256_of(released_weights)
    assert meta[contract.META_OPSET] == str(model.opset_import[0].version)
    assert meta[contract.META_PADDING] == "test"
    assert [i.name for i in model.graph.input] == [spec.input_name]
    assert [o.name for o in model.graph.output] == list(spec.output_names)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == (
        ["batch", 3, "height", "width"] if io == "float" else ["batch", "height", "width", 3]
    )


def test_verification_fails_when_the_model_drifts(float_onnx, released_enhancer):
    """The export's own check is able to fail: perturb one weight of the PyTorch side and it must raise."""
    model = type(released_enhancer.model)("test")
    model.load_state_dict(released_enhancer.model.state_dict())
    model.eval()
    with torch.no_grad():
        model.cond_add1.bias += 0.01
    with pytest.raises(CliplitError, match="failed verification"):
        verify_against_torch(float_onnx, FloatIO(model), "float", [])


def test_export_never_overwrites_unless_asked_and_leaves_no_partial_file(released_enhancer, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        export_onnx(released_enhancer, target, overwrite=False)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(CliplitError, match="unknown --io"):
        export_onnx(released_enhancer, tmp_path / "other.onnx", io="float16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_frame_size_check_names_the_minimum():
    contract.check_frame_size(contract.MIN_SIDE, contract.MIN_SIDE)
    with pytest.raises(ValueError, match=f"at least {contract.MIN_SIDE}x{contract.MIN_SIDE}"):
        contract.check_frame_size(1, 640)


def test_light_map_only_export_is_recorded_verified_and_runs_with_scale(tmp_path, capsys):
    """``--outputs light_map``: for hosts that apply the light map themselves (at a lower network resolution, or
    smoothed over time); cliplit's runtime applies it too, at full size matching the official output."""
    from cliplit.core.metrics import psnr
    from cliplit.export.cli import main
    from cliplit.runtime.enhancer import Enhancer

    target = tmp_path / "light-map.onnx"
    assert main(["--onnx", str(target), "--outputs", "light_map"]) == 0
    assert "outputs=light_map" in capsys.readouterr().out
    model = onnx.load(str(target))
    meta = {p.key: p.value for p in model.metadata_props}
    assert [o.name for o in model.graph.output] == ["light_map"] and meta[contract.META_OUTPUTS] == "light_map"
    bgr = read_image(photo(SMALL_PHOTO))
    with Enhancer.open(target, "onnxruntime") as enhancer:
        assert psnr(enhancer.enhance(bgr), read_image(reference(SMALL_PHOTO))) >= 80.0
    with Enhancer.open(target, "onnxruntime", scale=0.5) as enhancer:
        assert enhancer.enhance(bgr).shape == bgr.shape


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--outputs", "enhanced,mask"], "a float model can output enhanced, light_map"),
        (["--outputs", ""], "got none"),
        (["--io", "uint8", "--outputs", "light_map"], "a uint8 model can output enhanced"),
        (["--outputs", "enhanced", "--engine", "x.engine"], "drop --outputs"),
        (["--outputs", "enhanced", "--opencv-static", "24x40"], "drop --outputs"),
    ],
)
def test_bad_outputs_choices_fail_with_a_message_and_write_nothing(tmp_path, capsys, extra, message):
    from cliplit.export.cli import main

    assert main(["--onnx", str(tmp_path / "model.onnx"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_outputs_keep_the_contract_order_and_default_to_all(float_onnx):
    meta = {p.key: p.value for p in onnx.load(str(float_onnx)).metadata_props}
    assert meta[contract.META_OUTPUTS] == "enhanced,light_map"
    assert contract.io_spec("float", ["light_map", "enhanced"]).output_names == ("enhanced", "light_map")
    assert contract.outputs_from_metadata("float", {}) == ("enhanced", "light_map")
    assert contract.outputs_from_metadata("uint8", {contract.META_OUTPUTS: "enhanced"}) == ("enhanced",)
    with pytest.raises(CliplitError, match="can output enhanced"):
        contract.outputs_from_metadata("uint8", {contract.META_OUTPUTS: "light_map"})
