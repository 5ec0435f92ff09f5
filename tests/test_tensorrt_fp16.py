"""The FP16 ONNX for TensorRT 11, made from the real exported models and run in ONNX Runtime against FP32."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from tensorrt_fakes import PHOTO, exported_onnx

from cliplit.core.contract import model_input_from_rgb
from cliplit.core.errors import CliplitError
from cliplit.core.metrics import psnr
from cliplit.export.fp16 import NETWORK_SCOPE, convert_to_fp16, split_nodes
from cliplit.export.parity import PSNR_PEAK, PSNR_THRESHOLD_DB


@pytest.fixture(scope="module", params=["float", "uint8"])
def models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    io = request.param
    original = onnx.load(str(exported_onnx(tmp_path_factory, io)))
    return io, original, convert_to_fp16(original)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _io(model: onnx.ModelProto) -> list[tuple[str, int]]:
    return [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)]


def test_passes_the_onnx_checker_with_unchanged_io(models) -> None:
    _, original, half = models
    onnx.checker.check_model(half, full_check=True)
    assert _io(half) == _io(original)
    assert all(elem in (TensorProto.FLOAT, TensorProto.UINT8) for _, elem in _io(half))


def test_network_weights_are_fp16(models) -> None:
    _, original, half = models
    before = {t.name: t.data_type for t in original.graph.initializer}
    after = {t.name: t.data_type for t in half.graph.initializer}
    assert set(before.values()) == {TensorProto.FLOAT} and set(after.values()) == {TensorProto.FLOAT16}
    conv_outputs = [n.output[0] for n in half.graph.node if n.op_type == "Conv"]
    assert len(conv_outputs) == 21 and {_types(half)[name] for name in conv_outputs} == {TensorProto.FLOAT16}


def test_final_division_clamp_and_uint8_processing_stay_fp32(models) -> None:
    io, _, half = models
    types = _types(half)
    wrapper = [n for n in half.graph.node if not n.name.startswith(NETWORK_SCOPE) and not n.name.endswith("/to_fp32")]
    float_ops = [n for n in wrapper if n.op_type in ("Div", "Clip", "Mul", "Add", "Floor")]
    expected = {
        "float": ["Clip", "Div", "Clip"],
        "uint8": ["Div", "Clip", "Div", "Clip", "Mul", "Add", "Floor", "Clip"],
    }
    assert [n.op_type for n in float_ops] == expected[io]
    for node in float_ops:
        assert {types[name] for name in [*node.input, *node.output] if name} == {TensorProto.FLOAT}, node.name
    # exactly one cast into the network (its input) and one out (the light map)
    casts = sorted(n.name for n in half.graph.node if n.name.endswith(("/to_fp16", "/to_fp32")))
    assert len(casts) == 2 and casts[0].endswith("/to_fp16") and casts[1].endswith("/to_fp32")


def test_the_input_model_is_not_modified(models, tmp_path_factory: pytest.TempPathFactory) -> None:
    io, original, _ = models
    assert original.SerializeToString() == onnx.load(str(exported_onnx(tmp_path_factory, io))).SerializeToString()


def test_matches_fp32_onnx_runtime_on_a_real_photo(models, tmp_path_factory: pytest.TempPathFactory) -> None:
    io, original, half = models
    assert PHOTO.is_file(), f"missing shared test data {PHOTO}"
    bgr = cv2.imread(str(PHOTO))
    height = round(bgr.shape[0] * 256 / bgr.shape[1])
    rgb = cv2.resize(bgr, (256, height), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    batch = model_input_from_rgb(io, rgb)
    name = "image" if io == "float" else "frame"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    fp32 = ort.InferenceSession(original.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fp16 = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (reference,) = fp32.run(["enhanced"], {name: batch})
    (candidate,) = fp16.run(["enhanced"], {name: batch})
    assert candidate.dtype == reference.dtype and candidate.shape == reference.shape
    value = psnr(reference, candidate, PSNR_PEAK[io])
    print(f"FP16 ONNX vs FP32, {io}, {PHOTO.name} at {rgb.shape[1]}x{rgb.shape[0]}: PSNR {value:.1f} dB")
    assert value >= PSNR_THRESHOLD_DB
    # not trivially equal either: the network really computes in FP16
    assert not np.array_equal(reference, candidate)


def test_refuses_models_that_are_not_cliplit_exports() -> None:
    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [tensor("x", TensorProto.FLOAT, [1])], [tensor("y", TensorProto.FLOAT, [1])]
    )
    model = onnx.helper.make_model(graph)
    with pytest.raises(CliplitError, match="not a cliplit export"):
        split_nodes(model)
    with pytest.raises(CliplitError, match="not a cliplit export"):
        convert_to_fp16(model)
