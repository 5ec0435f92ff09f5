"""Graph passes that make the exported ONNX model run correctly in OpenCV's DNN module (cv2.dnn / cv::dnn).

Why the float export gave wrong results in OpenCV (max |difference| 0.8 and more against ONNX Runtime, different on
every run): OpenCV's ONNX ``Resize`` (Resize2 layer, both engines of 5.0.0) computes a linear source coordinate,
clamps it to ``[0, in - 1 - 1e-6]`` and takes its floor. For an axis of length 1 that is ``floor(-1e-6) = -1``: it
blends the row *before* each plane into the output with weight 1e-6. For the first plane that row lies outside the
tensor, and the new engine's buffers hold leftover data there (up to 1e30), so 1e-6 of it is garbage. CLIP-LIT's
pyramid pooling upsamples a 1×1 pooled map (the bins=1 branch) with exactly such a Resize; every other layer matches.
Upsampling a 1×1 map is a broadcast in every coordinate mode but ``tf_crop_and_resize``, so
``expand_single_pixel_resizes`` replaces those Resize nodes with an exact ``Expand``. ``export_onnx`` applies it to
every export, which makes the dynamic-shape model run in OpenCV 5's new engine (``ENGINE_NEW``, and ``ENGINE_AUTO``,
the default, which tries it first).

OpenCV 4.x and OpenCV 5's classic engine cannot run the dynamic model at all: their importer needs the value of every
``Shape`` at load time (the adaptive pooling and the upsampling derive their sizes from the frame). For them
``cliplit.export.opencv_static`` writes a model with a fixed 1×3×H×W input whose shape arithmetic is folded into
constants (``fold_constants``) and whose constant-times-tensor MatMuls are turned around
(``transpose_constant_left_matmuls``, for OpenCV 4.8). See docs/opencv.md for the versions this was checked with.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from cliplit.core.contract import io_spec

# A static model serves one frame at a time: the way OpenCV pipelines feed blobFromImage.
STATIC_BATCH = 1


def expand_single_pixel_resizes(model: onnx.ModelProto) -> int:
    """Replace each ``Resize`` of a map whose spatial size is statically 1×1 by ``Expand`` to the same ``sizes``.

    Exact (a 1×1 map upsamples to a constant plane) and avoids OpenCV 5.0's out-of-bounds read described above.
    Only Resize nodes with a ``sizes`` input over all four axes qualify. Returns how many nodes were replaced.
    """
    shapes = _inferred_shapes(model)
    replaced = 0
    for node in model.graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if "axes" in attributes or attributes.get("coordinate_transformation_mode") == b"tf_crop_and_resize":
            continue
        shape = shapes.get(node.input[0])
        if shape is None or len(shape) != 4 or shape[2:] != [1, 1]:
            continue
        node.CopyFrom(helper.make_node("Expand", [node.input[0], node.input[3]], list(node.output), name=node.name))
        replaced += 1
    return replaced


def fold_constants(model: onnx.ModelProto) -> int:
    """Evaluate every node whose inputs are known (initializers, or shapes that inference proves static).

    Repeats shape inference and folding until nothing changes, because folding a ``Pad``'s computed pads is what lets
    inference see the static shapes behind the next ``Shape``. Returns the number of nodes removed.
    """
    before = len(model.graph.node)
    while _fold_once(model):
        pass
    _drop_stale_value_info(model)
    return before - len(model.graph.node)


def transpose_constant_left_matmuls(model: onnx.ModelProto) -> int:
    """Rewrite ``MatMul(A, X)`` with a constant 2-D ``A`` as ``(Xᵀ · Aᵀ)ᵀ`` (transposing the last two axes).

    OpenCV 4.8's importer accepts a constant only as the second MatMul operand (it becomes a fully connected layer);
    the adaptive pooling's row-averaging product has it first. Returns the number of MatMuls rewritten.
    """
    constants = {t.name: t for t in model.graph.initializer}
    shapes = _inferred_shapes(model)
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in model.graph.node:
        left, right = [*node.input, "", ""][:2]
        matrix, rank = constants.get(left), len(shapes.get(right) or [])
        if node.op_type != "MatMul" or matrix is None or len(matrix.dims) != 2 or right in constants or rank < 2:
            nodes.append(node)
            continue
        transposed = f"{left}/transposed"
        if transposed not in constants:
            constants[transposed] = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(matrix).T))
            constants[transposed].name = transposed
            model.graph.initializer.append(constants[transposed])
        swap = [*range(rank - 2), rank - 1, rank - 2]
        name, out = node.name or node.output[0], node.output[0]
        nodes += [
            helper.make_node("Transpose", [right], [f"{out}/right_t"], name=f"{name}/right_t", perm=swap),
            helper.make_node("MatMul", [f"{out}/right_t", transposed], [f"{out}/t"], name=f"{name}/t"),
            helper.make_node("Transpose", [f"{out}/t"], [out], name=f"{name}/back", perm=swap),
        ]
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return rewritten


def clips_as_max_min(model: onnx.ModelProto) -> int:
    """Rewrite each ``Clip(x, lo, hi)`` with constant scalar bounds as ``Min(Max(x, x·0 + lo), x·0 + hi)``.

    OpenCV 4.5 and 4.6 take Clip's bounds only as attributes (opset ≤ 10) and refuse the input form that opset 11+
    requires, and they cannot take a constant as an operand of Max or Min either. A plane of the bound made from ``x``
    itself (``x·0 + lo``: a scalar Mul and Add, which they fold into one layer) gives Max and Min two tensors of one
    shape. Exact for finite ``x`` (``x·0`` is ±0, and ``±0 + lo`` is ``lo``); the model's Clips see finite values (the
    light map, and the image divided by the guarded light map). Returns the number of Clips rewritten.
    """
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in model.graph.node:
        bounds = [name for name in node.input[1:3]]
        steps = [(op_type, bound) for op_type, bound in zip(("Max", "Min"), bounds, strict=False) if bound]
        # a Clip without bounds has one input, which OpenCV 4.6 loads as it is
        if node.op_type != "Clip" or not steps or any(constants.get(b, np.empty(2)).size != 1 for _, b in steps):
            nodes.append(node)
            continue
        name, value, zeros = node.name or node.output[0], node.input[0], f"{node.output[0]}/zeros"
        model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), f"{name}/zero"))
        nodes.append(helper.make_node("Mul", [value, f"{name}/zero"], [zeros], name=zeros))
        for index, (op_type, bound) in enumerate(steps):
            plane = f"{node.output[0]}/{op_type.lower()}_plane"
            result = node.output[0] if index == len(steps) - 1 else f"{node.output[0]}/{op_type.lower()}"
            nodes.append(helper.make_node("Add", [zeros, bound], [plane], name=plane))
            nodes.append(helper.make_node(op_type, [value, plane], [result], name=result))
            value = result
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten


def make_static(model: onnx.ModelProto, height: int, width: int) -> None:
    """Fix a float model's input to ``STATIC_BATCH``×3×``height``×``width`` and simplify it for OpenCV's importers."""
    spec = io_spec("float")
    (graph_input,) = model.graph.input
    if graph_input.name != spec.input_name:
        raise ValueError(f"expected a float-variant model with input {spec.input_name!r}, got {graph_input.name!r}")
    _set_dims(graph_input, [STATIC_BATCH, 3, height, width])
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    fold_constants(model)
    expand_single_pixel_resizes(model)
    transpose_constant_left_matmuls(model)
    clips_as_max_min(model)
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    for output, typed in zip(model.graph.output, inferred.graph.output, strict=True):
        output.type.CopyFrom(typed.type)
    onnx.checker.check_model(model, full_check=True)


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every tensor's shape as ONNX shape inference sees it (None for a symbolic or unknown dimension)."""
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _fold_once(model: onnx.ModelProto) -> bool:
    graph = model.graph
    shapes = _inferred_shapes(model)
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        shape = shapes.get(node.input[0]) if node.op_type == "Shape" and not node.attribute else None
        if shape is not None and None not in shape:
            values[node.output[0]] = np.array(shape, dtype=np.int64)
        elif _foldable(node) and all(not name or name in values for name in node.input):
            values.update(zip(node.output, _evaluate(node, values, model.opset_import), strict=True))
        else:
            kept.append(node)
    if len(kept) == len(graph.node):
        return False
    needed = {name for node in kept for name in node.input} | {output.name for output in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in values.items() if k in needed)
    return True


def _foldable(node: onnx.NodeProto) -> bool:
    """Deterministic nodes without subgraphs (random ops and control flow stay in the graph)."""
    has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
    return not node.op_type.startswith("Random") and not has_subgraph


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], opsets) -> list[np.ndarray]:
    inputs = [name for name in node.input if name]
    graph = helper.make_graph(
        [node],
        "fold",
        [],
        [helper.make_value_info(name, onnx.TypeProto()) for name in node.output],
        [numpy_helper.from_array(np.asarray(values[name]), name) for name in dict.fromkeys(inputs)],
    )
    outputs = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(None, {})
    return [np.asarray(output) for output in outputs]


def _drop_stale_value_info(model: onnx.ModelProto) -> None:
    produced = {name for node in model.graph.node for name in node.output}
    kept = [info for info in model.graph.value_info if info.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _set_dims(info: onnx.ValueInfoProto, dims: list[int]) -> None:
    shape = info.type.tensor_type.shape
    del shape.dim[:]
    for value in dims:
        shape.dim.add().dim_value = value
