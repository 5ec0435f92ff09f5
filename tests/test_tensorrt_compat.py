"""The static TensorRT-compatibility check: every exported variant passes; each rule fails, naming node and rule."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from tensorrt_fakes import exported_onnx

from cliplit.core.errors import CliplitError
from cliplit.core.shapes import ProfileShapes, profile_from_args
from cliplit.export.fp16 import convert_to_fp16
from cliplit.export.trt_compat import Violation, check_tensorrt_compat, find_violations

DEFAULTS = {io: profile_from_args(io, None, None, None) for io in ("float", "uint8")}


def transpose_before_cast(model: onnx.ModelProto) -> onnx.ModelProto:
    """The uint8 wrapper as it once was: transpose the uint8 frame, then cast (same values).

    Rewires the export's ``/Cast -> /Transpose`` head into ``/Transpose -> /Cast``.
    """
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    nodes = {node.name: node for node in broken.graph.node}
    cast, transpose = nodes["/Cast"], nodes["/Transpose"]
    assert list(cast.input) == ["frame"] and list(transpose.input) == list(cast.output), "not the export expected"
    float_nchw = transpose.output[0]  # what the rest of the graph reads
    transpose.input[0], transpose.output[0] = "frame", "nchw_uint8"
    cast.input[0], cast.output[0] = "nchw_uint8", float_nchw
    order = [n for n in broken.graph.node if n.name not in ("/Cast", "/Transpose")]
    first = next(i for i, n in enumerate(order) if float_nchw in n.input)
    order[first:first] = [transpose, cast]
    broken.graph.ClearField("node")
    broken.graph.node.extend(order)
    broken.graph.ClearField("value_info")
    return broken


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, onnx.ModelProto]:
    loaded = {io: onnx.load(str(exported_onnx(tmp_path_factory, io))) for io in ("float", "uint8")}
    return {**loaded, **{f"{io}-fp16": convert_to_fp16(model) for io, model in loaded.items()}}


@pytest.mark.parametrize("variant", ["float", "uint8", "float-fp16", "uint8-fp16"])
def test_every_exported_variant_passes(models: dict[str, onnx.ModelProto], variant: str) -> None:
    io = variant.split("-")[0]
    assert find_violations(models[variant], DEFAULTS[io]) == []
    check_tensorrt_compat(
        models[variant], profile_from_args(io, "2x3x16x16" if io == "float" else "2x16x16x3", None, None)
    )


def test_the_old_uint8_wrapper_fails_naming_node_and_rule(models: dict[str, onnx.ModelProto]) -> None:
    broken = transpose_before_cast(models["uint8"])
    found = {(v.node, v.rule) for v in find_violations(broken, DEFAULTS["uint8"])}
    assert found == {
        ("/Transpose", "operator-types"),  # Transpose does not take UINT8
        ("/Transpose", "uint8-io-only"),  # it reads the UINT8 frame and writes a UINT8 intermediate
        ("/Cast", "uint8-io-only"),  # it reads a UINT8 intermediate
    }
    with pytest.raises(CliplitError, match=r"old\.onnx would not build with TensorRT: /Transpose \(Transpose\) breaks"):
        check_tensorrt_compat(broken, DEFAULTS["uint8"], source="old.onnx")


def test_cast_first_changes_no_output(models: dict[str, onnx.ModelProto]) -> None:
    """The fix only reorders exact operations: the fixed and the old graph agree bit for bit in ONNX Runtime."""
    frame = np.random.default_rng(3).integers(0, 256, (1, 21, 34, 3), dtype=np.uint8)
    fixed = ort.InferenceSession(models["uint8"].SerializeToString(), providers=["CPUExecutionProvider"])
    old = ort.InferenceSession(
        transpose_before_cast(models["uint8"]).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (ours,) = fixed.run(None, {"frame": frame})
    (theirs,) = old.run(None, {"frame": frame})
    assert np.array_equal(ours, theirs)


def test_a_static_dimension_the_profile_varies_is_named(models: dict[str, onnx.ModelProto]) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(models["float"])
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64  # height fixed at 64
    violation, *_ = find_violations(model, DEFAULTS["float"])
    assert (violation.node, violation.rule) == ("graph input image", "dynamic-shape")
    assert "dimension 2 is static (64) but the profile sets 64..2160 there" in violation.detail
    fixed_height = profile_from_args("float", "1x3x64x64", "1x3x64x128", "1x3x64x256")
    assert [v.node for v in find_violations(model, fixed_height)] == ["graph output light_map"]  # still "height"
    # the wrong variant's profile: the graph has no input of that name
    (wrong,) = find_violations(models["float"], DEFAULTS["uint8"])
    assert wrong.rule == "dynamic-shape" and "profile is for the one input 'frame'" in wrong.detail


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _value(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


IMAGE = _value("image", TensorProto.FLOAT, ["n", 3, "h", "w"])


def _rules(model: onnx.ModelProto, profile: ProfileShapes | None = None) -> list[tuple[str, str]]:
    return [(v.node, v.rule) for v in find_violations(model, profile)]


def test_pad_axes_must_be_constant() -> None:
    pads = helper.make_tensor("pads", TensorProto.INT64, [4], [1, 1, 1, 1])
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"], name="shape"),
        helper.make_node("Slice", ["shape", "one", "two"], ["axes"], name="dynamic_axes"),
        helper.make_node("Pad", ["image", "pads", "", "axes"], ["padded"], name="pad", mode="reflect"),
    ]
    one = helper.make_tensor("one", TensorProto.INT64, [1], [2])
    two = helper.make_tensor("two", TensorProto.INT64, [1], [4])
    model = _model(
        nodes, [IMAGE], [_value("padded", TensorProto.FLOAT, ["n", 3, "p", "q"])], [pads, one, two], opset=18
    )
    violations = find_violations(model)
    assert [(v.node, v.rule) for v in violations] == [("pad", "attribute-form")]
    assert "input 3 ('axes', the axes) must be a build-time constant" in violations[0].detail


def test_resize_forms_outside_the_matrix_are_named() -> None:
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 3, 8, 8])
    node = helper.make_node(
        "Resize",
        ["image", "", "", "sizes"],
        ["out"],
        name="up",
        mode="cubic",
        antialias=1,
        keep_aspect_ratio_policy="not_larger",
    )
    model = _model([node], [IMAGE], [_value("out", TensorProto.FLOAT, ["a", "b", "c", "d"])], [sizes], opset=18)
    details = [v.detail for v in find_violations(model)]
    assert details == [
        "mode 'cubic' is unsupported (only linear, nearest)",
        "antialiasing is unsupported",
        "keep_aspect_ratio_policy must be 'stretch'",
    ]


def test_unsupported_operators_domains_and_opsets() -> None:
    det = helper.make_node("Det", ["m"], ["d"], name="determinant")
    model = _model([det], [_value("m", TensorProto.FLOAT, [3, 3])], [_value("d", TensorProto.FLOAT, [])])
    assert _rules(model) == [("determinant", "operator-types")]
    custom = helper.make_node("Fancy", ["m"], ["d"], name="plugin", domain="com.example")
    model = _model([custom], [_value("m", TensorProto.FLOAT, [3])], [_value("d", TensorProto.FLOAT, [3])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    assert _rules(model) == [("plugin", "domain")]
    relu = helper.make_node("Relu", ["image"], ["out"], name="relu")
    old = _model([relu], [IMAGE], [_value("out", TensorProto.FLOAT, ["n", 3, "h", "w"])], opset=8)
    assert _rules(old) == [("graph", "opset")]


def test_type_errors_and_unsupported_types_are_named() -> None:
    add = helper.make_node("Add", ["image", "offset"], ["out"], name="bad_add")
    offset = helper.make_tensor("offset", TensorProto.INT64, [1], [1])
    model = _model([add], [IMAGE], [_value("out", TensorProto.FLOAT, ["n", 3, "h", "w"])], [offset])
    assert _rules(model) == [("graph", "shape-inference")]  # Add of float and int64 does not type-check
    conv = helper.make_node("Floor", ["x"], ["y"], name="floor_double")
    model = _model([conv], [_value("x", TensorProto.DOUBLE, [2])], [_value("y", TensorProto.DOUBLE, [2])])
    (violation,) = find_violations(model)
    assert (violation.rule, violation.detail) == (
        "operator-types",
        "input 0 'x' is DOUBLE; TensorRT's Floor takes BF16, FP16, FP32 there",
    )


def test_an_output_dimension_no_profile_bounds_is_named() -> None:
    relu = helper.make_node("Relu", ["image"], ["out"], name="relu")
    out = _value("out", TensorProto.FLOAT, ["n", 3, "h", "other"])
    profile = profile_from_args("float", "1x3x8x8", "1x3x16x16", "1x3x32x32")
    assert find_violations(_model([relu], [IMAGE], [out]), profile) == [
        Violation(
            "graph output out",
            "-",
            "dynamic-shape",
            "dimension 3 (other) is neither static nor one of the input's dimensions (h, n, w), so no optimization "
            "profile bounds it",
        )
    ]
