"""The exported model in OpenCV's DNN module (cv2.dnn, the engine C++ pipelines link), checked against ONNX Runtime.

Tolerances: the light map within 1e-4 (OpenCV and ONNX Runtime agree to ~1e-6 in FP32, differing only in summation
order; the bug these tests guard against gave 0.8 up to 1e26), the enhanced image within 1e-3 (x / L amplifies the
light map's rounding where L is small; a quarter of one 8-bit level is still invisible).
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SMALL_PHOTO, photo, reference, shared_file
from onnx import TensorProto, helper, numpy_helper

from cliplit.core.atomic import OutputExistsError
from cliplit.core.contract import META_IO
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.export.opencv_compat import (
    STATIC_BATCH,
    clips_as_max_min,
    expand_single_pixel_resizes,
    fold_constants,
    transpose_constant_left_matmuls,
)
from cliplit.export.opencv_static import export_opencv_static, parse_static_size

LIGHT_MAP_TOLERANCE = 1e-4
ENHANCED_TOLERANCE = 1e-3
STATIC_SIZE = (40, 56)
# The ops the static model may contain: all of them load in OpenCV 4.8 to 5.0 (checked by hand, see docs/opencv.md).
# No Clip: OpenCV 4.5/4.6 refuse its opset-11 form (clips_as_max_min), and they load Max, Min and Mul.
STATIC_OPS = {"Add", "Concat", "Conv", "Div", "Expand", "LeakyRelu", "MatMul", "Max", "Min", "Mul", "PRelu", "Pad"}
STATIC_OPS |= {"Relu", "Resize", "Transpose"}
ENGINES = [name for name in ("ENGINE_CLASSIC", "ENGINE_NEW", "ENGINE_OPENCV", "ENGINE_AUTO") if hasattr(cv2.dnn, name)]
# The engines that run dynamic input shapes: OpenCV 5.0's new engine (ENGINE_NEW, and ENGINE_AUTO, which tries it
# first); OpenCV 5.1 renamed it ENGINE_OPENCV (ENGINE_AUTO again the default; ENGINE_ORT needs an ONNX Runtime build).
DYNAMIC_ENGINES = [name for name in ("ENGINE_NEW", "ENGINE_OPENCV", "ENGINE_AUTO") if hasattr(cv2.dnn, name)]
needs_new_engine = pytest.mark.skipif(
    not DYNAMIC_ENGINES,
    reason=f"dynamic input shapes need OpenCV 5's engine; this is OpenCV {cv2.__version__} "
    "(the static-shape export is tested instead)",
)
# the engine named for OpenCV 5's default-engine checks: 5.0's ENGINE_NEW or 5.1's ENGINE_OPENCV
NEW_ENGINE = next((name for name in ("ENGINE_NEW", "ENGINE_OPENCV") if hasattr(cv2.dnn, name)), None)


def _onnxruntime(model) -> ort.InferenceSession:
    """A CPU session for a model path or an in-memory ``ModelProto``."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _read_net(source, engine: str | None) -> cv2.dnn.Net:
    """A net from a path or serialized bytes, with ``engine`` (an ``ENGINE_*`` name) where OpenCV has engines."""
    data = source if isinstance(source, str) else np.frombuffer(source, np.uint8)
    if engine is None:
        return cv2.dnn.readNetFromONNX(data)
    return cv2.dnn.readNetFromONNX(data, engine=getattr(cv2.dnn, engine))


def _photo_blob(height: int, width: int) -> np.ndarray:
    """A real backlit photo as C++ callers would feed it: BGR uint8 → blobFromImage(1/255, swapRB)."""
    bgr = cv2.resize(read_image(photo(SMALL_PHOTO)), (width, height), interpolation=cv2.INTER_AREA)
    return cv2.dnn.blobFromImage(bgr, 1 / 255.0, swapRB=True)


def _assert_close(opencv: list[np.ndarray], onnxruntime: list[np.ndarray]) -> None:
    enhanced, light_map = opencv
    assert enhanced.shape == onnxruntime[0].shape and light_map.shape == onnxruntime[1].shape
    assert np.abs(light_map - onnxruntime[1]).max() <= LIGHT_MAP_TOLERANCE
    assert np.abs(enhanced - onnxruntime[0]).max() <= ENHANCED_TOLERANCE


@pytest.fixture(scope="module")
def static_export(released_enhancer, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("opencv") / "clip-lit-opencv.onnx"
    return export_opencv_static(released_enhancer, path, *STATIC_SIZE)


def test_float_export_has_no_resize_from_a_single_pixel(float_onnx):
    """The pyramid pooling's bins=1 branch is upsampled by Expand, the other three bins by Resize."""
    model = onnx.load(str(float_onnx))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Expand") == 1 and ops.count("Resize") == 3
    assert expand_single_pixel_resizes(model) == 0


@needs_new_engine
@pytest.mark.parametrize("engine", DYNAMIC_ENGINES)
def test_dynamic_float_export_matches_onnxruntime_in_opencv(float_onnx, engine):
    """One net serves every frame size and batch, as the dynamic model does in ONNX Runtime."""
    net = _read_net(str(float_onnx), engine)
    session = _onnxruntime(float_onnx)
    rng = np.random.default_rng(11)
    inputs = [rng.random(shape, dtype=np.float32) for shape in [(1, 3, 2, 2), (2, 3, 7, 9), (1, 3, 67, 93)]]
    inputs.append(_photo_blob(256, 384))
    for image in inputs:
        net.setInput(image)
        _assert_close(net.forward(["enhanced", "light_map"]), session.run(None, {"image": image}))


@needs_new_engine
def test_uint8_export_matches_onnxruntime_in_opencv_within_one_level(uint8_onnx):
    """Decoder frames in, frames out; OpenCV 5.0 returns the values as float32 (docs/opencv.md), so compare values."""
    net = _read_net(str(uint8_onnx), NEW_ENGINE)
    session = _onnxruntime(uint8_onnx)
    bgr = cv2.resize(read_image(photo(SMALL_PHOTO)), (384, 256), interpolation=cv2.INTER_AREA)
    random = np.random.default_rng(12).integers(0, 256, (2, 7, 9, 3), dtype=np.uint8)
    for frame in (bgr[None], random):
        net.setInput(frame)
        enhanced = net.forward()
        (expected,) = session.run(None, {"frame": frame})
        assert enhanced.shape == expected.shape
        assert np.abs(enhanced.astype(np.float32) - expected.astype(np.float32)).max() <= 1


@needs_new_engine
@pytest.mark.slow
def test_opencv_reproduces_the_official_output_on_a_full_size_photo(float_onnx):
    """The C++ recipe (blobFromImage with swapRB, 1/255; round y·255) gives the official result on a real photo."""
    bgr = read_image(photo(SMALL_PHOTO))
    net = _read_net(str(float_onnx), "ENGINE_AUTO")
    net.setInput(cv2.dnn.blobFromImage(bgr, 1 / 255.0, swapRB=True))
    enhanced, light_map = net.forward(["enhanced", "light_map"])
    official_light_map = np.load(shared_file(f"reference/{SMALL_PHOTO}_lightmap.npy"))
    assert np.abs(light_map[0, 0] - official_light_map).max() <= LIGHT_MAP_TOLERANCE
    rgb8 = np.clip(np.floor(enhanced[0].transpose(1, 2, 0) * 255.0 + 0.5), 0, 255).astype(np.uint8)
    official = read_image(reference(SMALL_PHOTO))[:, :, ::-1]
    levels = np.abs(rgb8.astype(np.int16) - official.astype(np.int16))
    # A value within float rounding of a .5 boundary may round either way: one level, on a handful of pixels.
    assert levels.max() <= 1 and (levels > 0).mean() < 1e-3


def test_static_export_is_static_folded_and_keeps_the_contract(static_export):
    model = onnx.load(str(static_export.path))
    height, width = STATIC_SIZE
    dims = [
        [d.dim_value for d in value.type.tensor_type.shape.dim] for value in (*model.graph.input, *model.graph.output)
    ]
    assert dims == [
        [STATIC_BATCH, 3, height, width],
        [STATIC_BATCH, 3, height, width],
        [STATIC_BATCH, 1, height, width],
    ]
    assert {node.op_type for node in model.graph.node} <= STATIC_OPS
    constants = {init.name for init in model.graph.initializer}
    assert not [n for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in constants]
    assert {prop.key: prop.value for prop in model.metadata_props}[META_IO] == "float"
    assert static_export.max_abs_diff[f"static {height}x{width} vs dynamic"] <= LIGHT_MAP_TOLERANCE


def test_static_export_passes_the_tensorrt_check_only_with_its_own_fixed_profile(static_export):
    """The static model would also build in TensorRT, with a profile that is exactly its one input shape."""
    from cliplit.core.shapes import ProfileShapes, profile_from_args
    from cliplit.export.trt_compat import find_violations

    model = onnx.load(str(static_export.path))
    shape = (STATIC_BATCH, 3, *STATIC_SIZE)
    assert find_violations(model, ProfileShapes("float", shape, shape, shape)) == []
    rules = {(v.node, v.rule) for v in find_violations(model, profile_from_args("float", None, None, None))}
    assert rules == {("graph input image", "dynamic-shape")}  # the default 64..2160 profile cannot apply


@pytest.mark.parametrize("engine", [*ENGINES, None], ids=[*ENGINES, "default"])
def test_static_export_matches_onnxruntime_in_every_opencv_engine(static_export, engine):
    net = _read_net(str(static_export.path), engine)
    session = _onnxruntime(static_export.path)
    random = np.random.default_rng(5).random((STATIC_BATCH, 3, *STATIC_SIZE), dtype=np.float32)
    for image in (random, _photo_blob(*STATIC_SIZE)):
        net.setInput(image)
        _assert_close(net.forward(["enhanced", "light_map"]), session.run(None, {"image": image}))


def test_static_export_refuses_bad_sizes_and_existing_files_before_exporting(released_enhancer, tmp_path):
    with pytest.raises(CliplitError, match="at least 2x2"):
        export_opencv_static(released_enhancer, tmp_path / "tiny.onnx", 1, 64)
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        export_opencv_static(released_enhancer, existing, 32, 32, overwrite=False)
    assert existing.read_bytes() == b"keep me"


@pytest.mark.parametrize(("text", "size"), [("720x1280", (720, 1280)), (" 2X3 ", (2, 3))])
def test_parse_static_size_reads_height_then_width(text, size):
    assert parse_static_size(text) == size


@pytest.mark.parametrize(("text", "message"), [("720", "HEIGHTxWIDTH"), ("axb", "HEIGHTxWIDTH"), ("1x5", "2x2")])
def test_parse_static_size_explains_bad_input(text, message):
    with pytest.raises(CliplitError, match=message):
        parse_static_size(text)


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _tensor(name: str, dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return _onnxruntime(model).run(None, feeds)


def test_expand_pass_replaces_only_resizes_of_single_pixel_maps():
    """A pooled 1×1 map upsampled to the frame becomes Expand; a Resize of a full-size map is left alone."""
    corners = "align_corners"
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "w"], ["conv"]),
        helper.make_node("Shape", ["x"], ["sizes"]),
        helper.make_node(
            "Resize", ["conv", "", "", "sizes"], ["up"], mode="linear", coordinate_transformation_mode=corners
        ),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["same"], mode="linear"),
        helper.make_node("Add", ["up", "same"], ["y"]),
    ]
    model = _model(nodes, [_tensor("x", [1, 8, "h", "w"])], [_tensor("y", [1, 8, "h", "w"])], [weight])
    x = np.random.default_rng(1).random((1, 8, 5, 7), dtype=np.float32)
    (before,) = _run(model, {"x": x})
    assert expand_single_pixel_resizes(model) == 1
    assert [n.op_type for n in model.graph.node].count("Resize") == 1
    (after,) = _run(model, {"x": x})
    assert np.abs(after - before).max() <= 1e-6
    if NEW_ENGINE is not None:
        net = _read_net(model.SerializeToString(), NEW_ENGINE)
        net.setInput(x)
        assert np.abs(net.forward() - before).max() <= LIGHT_MAP_TOLERANCE


def test_fold_constants_follows_shapes_through_computed_pads():
    """Pads computed from constants are folded first; then the Shape behind the Pad becomes a constant too."""
    constants = [
        numpy_helper.from_array(np.array([0, 0, 1, 1], np.int64), "begin"),
        numpy_helper.from_array(np.array([0, 0, 1, 1], np.int64), "end"),
    ]
    nodes = [
        helper.make_node("Concat", ["begin", "end"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Shape", ["padded"], ["shape"]),
        helper.make_node("Reshape", ["padded", "shape"], ["y"]),
    ]
    model = _model(nodes, [_tensor("x", [1, 3, 4, 6])], [_tensor("y", None)], constants)
    x = np.random.default_rng(2).random((1, 3, 4, 6), dtype=np.float32)
    (before,) = _run(model, {"x": x})
    assert fold_constants(model) == 2
    assert [n.op_type for n in model.graph.node] == ["Pad", "Reshape"]
    (after,) = _run(model, {"x": x})
    assert np.array_equal(after, before)


def test_transpose_constant_left_matmuls_is_exact():
    """Both products with the shared constant are turned around; the constant's transpose is stored once."""
    matrix = numpy_helper.from_array(np.random.default_rng(3).random((3, 5), dtype=np.float32), "rows")
    nodes = [
        helper.make_node("MatMul", ["rows", "x"], ["a"]),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["rows", "r"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    model = _model(nodes, [_tensor("x", [1, 2, 5, 4])], [_tensor("y", [1, 2, 3, 4])], [matrix])
    x = np.random.default_rng(4).random((1, 2, 5, 4), dtype=np.float32) - 0.5
    (before,) = _run(model, {"x": x})
    assert transpose_constant_left_matmuls(model) == 2
    constants = [init.name for init in model.graph.initializer]
    assert constants == ["rows/transposed"]
    assert all(n.input[1] in constants for n in model.graph.node if n.op_type == "MatMul")
    (after,) = _run(model, {"x": x})
    assert np.abs(after - before).max() <= 1e-6


def test_clips_as_max_min_is_exact_and_leaves_boundless_clips():
    """Both Clip forms of the contract (lower bound only: max(L, eps); both: the final [0, 1] clamp) become Max/Min
    against a plane of the bound, bit for bit; a Clip without bounds (which OpenCV 4.6 loads) is left alone."""
    constants = [
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Clip", ["x", "eps", ""], ["guarded"]),
        helper.make_node("Div", ["x", "guarded"], ["ratio"]),
        helper.make_node("Clip", ["ratio", "zero", "one"], ["clamped"]),
        helper.make_node("Clip", ["clamped"], ["y"]),
    ]
    model = _model(nodes, [_tensor("x", [1, 3, 5, 7])], [_tensor("y", [1, 3, 5, 7])], constants)
    x = np.random.default_rng(6).random((1, 3, 5, 7), dtype=np.float32) * 2 - 0.5
    x[0, 0, 0, :3] = [0.0, 1e-9, -0.0]
    (before,) = _run(model, {"x": x})
    assert clips_as_max_min(model) == 2
    assert [n.op_type for n in model.graph.node].count("Clip") == 1
    onnx.checker.check_model(model, full_check=True)
    (after,) = _run(model, {"x": x})
    assert np.array_equal(after, before)
    net = _read_net(model.SerializeToString(), None)
    net.setInput(x)
    assert np.array_equal(net.forward(), before)


def test_static_export_enhanced_output_matches_the_dynamic_export(static_export, float_onnx):
    """The rewritten tail (guarded division and clamp without Clip) gives the dynamic model's enhanced image."""
    image = _photo_blob(*STATIC_SIZE)
    static = _onnxruntime(static_export.path).run(None, {"image": image})
    dynamic = _onnxruntime(float_onnx).run(None, {"image": image})
    assert np.abs(static[0] - dynamic[0]).max() <= ENHANCED_TOLERANCE
    assert np.abs(static[1] - dynamic[1]).max() <= LIGHT_MAP_TOLERANCE
