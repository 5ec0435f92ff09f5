"""A static check, on CPU, that TensorRT's ONNX parser will accept an exported model: run before every engine build.

No engine can be built where cliplit is developed (no GPU, no TensorRT), and the first place a user meets a graph
TensorRT rejects is a parser error on their GPU machine, after the export. This module reads the graph the way the
parser does and names the node and the rule for every problem it finds:

1. ``shape-inference``: ``onnx.checker`` and strict ONNX shape and type inference (with data propagation) over the
   whole graph; every tensor a node reads must have a known element type.
2. ``opset`` / ``domain``: the default-domain opset is one TensorRT 10 and 11 import (9 to 20) and no node needs a
   plugin (a custom domain).
3. ``operator-types``: every operator is in onnx-tensorrt's support matrix and supported for the types of its data
   inputs; index, shape and condition inputs have their own allowed types.
4. ``uint8-io-only``: UINT8 exists only on graph inputs and outputs, and only a Cast touches it ("UINT8 is only
   supported as network input or output tensor types"; Cast is the only operator listing UINT8).
5. ``attribute-form``: the restrictions the matrix lists for the operators this network family uses: Pad/Slice/
   Squeeze/Unsqueeze/Reduce axes given as a constant, Resize modes and its scales/axes form, no antialiasing,
   pooling only in 2D/3D without dilation, no string or sparse Constants.
6. ``dynamic-shape``: a dynamic input dimension is one the optimization profile sets a range for, a static one is
   one the profile keeps fixed at that value, and every output dimension is static or one of the input's (so the
   profile bounds it).

Source of the rules: onnx-tensorrt's docs/operators.md, release/10.1-GA (TensorRT 10.0/10.1, the oldest TensorRT this
project supports, opset 9-20) cross-checked with the 10.15 matrix; where they differ the stricter rule is kept (10.1:
Pad's and Slice's ``axes`` must be initializers). A graph that passes can still fail in TensorRT for reasons only a
GPU shows (kernels, memory); one that fails here would fail in the parser or the builder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from cliplit.core.contract import io_spec
from cliplit.core.errors import CliplitError
from cliplit.core.shapes import ProfileShapes

OPSET_RANGE = (9, 20)
ONNX_DOMAINS = ("", "ai.onnx")

_NAMES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
    TensorProto.INT8: "INT8",
    TensorProto.DOUBLE: "DOUBLE",
}
FLOATS = frozenset({"FP32", "FP16", "BF16"})
INTS = frozenset({"INT32", "INT64"})
NUMBERS = FLOATS | INTS
ANY = NUMBERS | {"BOOL"}
INDEX = INTS

#: operator -> types of its data inputs (onnx-tensorrt support matrix, "Supported Types")
SUPPORTED: dict[str, frozenset[str]] = {
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Max", "Min", "Mod", "Abs", "Neg", "Sum", "Mean"), NUMBERS),
    **dict.fromkeys(("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Range", "ArgMax"), NUMBERS),
    **dict.fromkeys(("Relu",), NUMBERS),
    **dict.fromkeys(("And", "Or", "Xor", "Not"), frozenset({"BOOL"})),
    **dict.fromkeys(("Cast", "CastLike"), ANY | {"UINT8"}),
    **dict.fromkeys(
        ("Concat", "Constant", "ConstantOfShape", "Expand", "Flatten", "Gather", "Identity", "Reshape", "Shape"),
        ANY,
    ),
    **dict.fromkeys(("Slice", "Split", "Squeeze", "Tile", "Transpose", "Unsqueeze", "Where"), ANY),
    **dict.fromkeys(("Pad", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"), NUMBERS),
    **dict.fromkeys(
        (
            "AveragePool",
            "MaxPool",
            "GlobalAveragePool",
            "GlobalMaxPool",
            "BatchNormalization",
            "Ceil",
            "Clip",
            "Conv",
            "ConvTranspose",
            "Erf",
            "Exp",
            "Floor",
            "Gemm",
            "InstanceNormalization",
            "LeakyRelu",
            "Log",
            "MatMul",
            "Pow",
            "PRelu",
            "Reciprocal",
            "Resize",
            "Round",
            "Sigmoid",
            "Softmax",
            "Sqrt",
            "Tanh",
        ),
        FLOATS,
    ),
}
#: operator -> {input index: allowed types} for inputs that are indices, shapes, axes or conditions, not data
AUXILIARY: dict[str, dict[int, frozenset[str]]] = {
    "Gather": {1: INDEX},
    "Reshape": {1: frozenset({"INT64"})},
    "Expand": {1: frozenset({"INT64"})},
    "Tile": {1: frozenset({"INT64"})},
    "Pad": {1: frozenset({"INT64"}), 3: INDEX},
    "Slice": {1: INDEX, 2: INDEX, 3: INDEX, 4: INDEX},
    "Squeeze": {1: frozenset({"INT64"})},
    "Unsqueeze": {1: frozenset({"INT64"})},
    "Split": {1: frozenset({"INT64"})},
    "Resize": {1: FLOATS, 2: frozenset({"FP32"}), 3: frozenset({"INT64"})},
    "Where": {0: frozenset({"BOOL"})},
    "ConstantOfShape": {0: frozenset({"INT64"})},
    "Shape": {0: ANY | {"UINT8"}},  # Shape reads only the dimensions; its input type is not computed on
    "CastLike": {1: ANY | {"UINT8"}},
    **{op: {1: frozenset({"INT64"})} for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")},
}
#: inputs that the parser needs as build-time constants (initializers or Constant outputs): operator -> indices
CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Pad": (3,),
    "Slice": (3,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    **{op: (1,) for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")},
}
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


@dataclass(frozen=True)
class Violation:
    """One reason the parser or builder would reject the graph: where, which rule, what exactly."""

    node: str
    op: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}) breaks rule {self.rule}: {self.detail}"


def check_tensorrt_compat(
    model: onnx.ModelProto, profile: ProfileShapes | None = None, *, source: str = "the ONNX model"
) -> None:
    """Raise ``CliplitError`` naming each node and rule that TensorRT would reject (see the module docstring)."""
    violations = find_violations(model, profile)
    if violations:
        shown = "; ".join(str(v) for v in violations[:8])
        more = f" (and {len(violations) - 8} more)" if len(violations) > 8 else ""
        raise CliplitError(f"{source} would not build with TensorRT: {shown}{more}")


def find_violations(model: onnx.ModelProto, profile: ProfileShapes | None = None) -> list[Violation]:
    """Every violation of the rules in the module docstring, in graph order; empty when the graph passes."""
    plugins = [
        Violation(
            node.name or node.output[0], node.op_type, "domain", f"domain {node.domain!r} needs a TensorRT plugin"
        )
        for node in model.graph.node
        if node.domain not in ONNX_DOMAINS
    ]
    if plugins:  # ONNX cannot type-check operators of unknown domains either: report these alone
        return plugins
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as error:  # onnx raises several exception types; each means the graph is invalid
        return [Violation("graph", "-", "shape-inference", f"ONNX shape/type inference failed: {error}")]
    graph = inferred.graph
    types = _tensor_types(graph)
    constants = {t.name for t in graph.initializer} | {
        out for node in graph.node if node.op_type == "Constant" for out in node.output
    }
    io_names = {v.name for v in (*graph.input, *graph.output)}
    violations = _opset_violations(inferred)
    for node in graph.node:
        violations += _node_violations(node, types, constants, io_names)
    if profile is not None:
        violations += _shape_violations(graph, profile)
    return violations


def _tensor_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _opset_violations(model: onnx.ModelProto) -> list[Violation]:
    low, high = OPSET_RANGE
    found = []
    for opset in model.opset_import:
        if opset.domain in ONNX_DOMAINS and not low <= opset.version <= high:
            detail = f"opset {opset.version} is outside the opsets TensorRT 10/11 import ({low} to {high})"
            found.append(Violation("graph", "-", "opset", detail))
    return found


def _node_violations(
    node: onnx.NodeProto, types: dict[str, int], constants: set[str], io_names: set[str]
) -> list[Violation]:
    name = node.name or f"node_of_{node.output[0]}"  # the name onnx-tensorrt gives an unnamed node
    found = [Violation(name, node.op_type, rule, detail) for rule, detail in _type_problems(node, types)]
    found += [Violation(name, node.op_type, "uint8-io-only", d) for d in _uint8_problems(node, types, io_names)]
    found += [Violation(name, node.op_type, "attribute-form", d) for d in _form_problems(node, types, constants)]
    return found


def _type_problems(node: onnx.NodeProto, types: dict[str, int]) -> Iterable[tuple[str, str]]:
    supported = SUPPORTED.get(node.op_type)
    if supported is None:
        yield "operator-types", f"{node.op_type} is not in onnx-tensorrt's support matrix for TensorRT 10"
        return
    auxiliary = AUXILIARY.get(node.op_type, {})
    for index, tensor in enumerate(node.input):
        if not tensor:
            continue
        if tensor not in types or types[tensor] == TensorProto.UNDEFINED:
            yield "shape-inference", f"the type of input {tensor!r} cannot be inferred"
            continue
        allowed = auxiliary.get(index, supported)
        type_name = _NAMES.get(types[tensor], TensorProto.DataType.Name(types[tensor]))
        if type_name not in allowed:
            yield (
                "operator-types",
                (f"input {index} {tensor!r} is {type_name}; TensorRT's {node.op_type} takes {_listing(allowed)} there"),
            )
    if node.op_type in ("Cast", "Constant", "ConstantOfShape"):
        for tensor in node.output:
            type_name = _NAMES.get(types.get(tensor, 0), "an unsupported type")
            if type_name not in supported:
                yield (
                    "operator-types",
                    f"output {tensor!r} is {type_name}; TensorRT's {node.op_type} makes {_listing(supported)}",
                )


def _uint8_problems(node: onnx.NodeProto, types: dict[str, int], io_names: set[str]) -> Iterable[str]:
    for role, tensors in (("reads", node.input), ("writes", node.output)):
        for tensor in tensors:
            if not tensor or types.get(tensor) != TensorProto.UINT8:
                continue
            if tensor not in io_names:
                yield f"{role} UINT8 intermediate tensor {tensor!r}; TensorRT takes UINT8 only as network I/O"
            elif node.op_type not in ("Cast", "CastLike"):
                yield f"{role} the UINT8 network I/O tensor {tensor!r}; only a Cast may touch it (cast, then compute)"


def _form_problems(node: onnx.NodeProto, types: dict[str, int], constants: set[str]) -> Iterable[str]:
    for index in CONSTANT_INPUTS.get(node.op_type, ()):
        if index < len(node.input) and node.input[index] and node.input[index] not in constants:
            yield f"input {index} ({node.input[index]!r}, the axes) must be a build-time constant (an initializer)"
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Resize":
        yield from _resize_problems(node, attributes)
    elif node.op_type in ("AveragePool", "MaxPool"):
        if len(attributes.get("kernel_shape", [])) not in (2, 3):
            yield "only 2D and 3D pooling is supported"
        if any(d != 1 for d in attributes.get("dilations", [])):
            yield "dilations must be empty or all ones"
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            yield "the Indices output is unsupported"
    elif node.op_type == "Constant" and {"sparse_value", "value_string", "value_strings"} & set(attributes):
        yield "sparse_value, value_string and value_strings are unsupported"


def _resize_problems(node: onnx.NodeProto, attributes: dict[str, object]) -> Iterable[str]:
    mode = _text(attributes.get("mode", b"nearest"))
    coordinates = _text(attributes.get("coordinate_transformation_mode", b"half_pixel"))
    if mode not in RESIZE_MODES:
        yield f"mode {mode!r} is unsupported (only {_listing(RESIZE_MODES)})"
    if coordinates not in RESIZE_COORDINATES:
        yield f"coordinate_transformation_mode {coordinates!r} is unsupported (only {_listing(RESIZE_COORDINATES)})"
    if mode == "nearest" and _text(attributes.get("nearest_mode", b"round_prefer_floor")) not in RESIZE_NEAREST:
        yield f"nearest_mode must be one of {_listing(RESIZE_NEAREST)}"
    if attributes.get("antialias", 0):
        yield "antialiasing is unsupported"
    if _text(attributes.get("keep_aspect_ratio_policy", b"stretch")) != "stretch":
        yield "keep_aspect_ratio_policy must be 'stretch'"
    axes = attributes.get("axes")
    uses_scales = len(node.input) > 2 and bool(node.input[2])
    if uses_scales and axes is not None and list(axes) != list(range(len(list(axes)))):
        yield "with a scales input, axes must be 0, 1, ..., rank-1"


def _shape_violations(graph: onnx.GraphProto, profile: ProfileShapes) -> list[Violation]:
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    expected = io_spec(profile.io).input_name
    if [v.name for v in inputs] != [expected]:
        names = [v.name for v in inputs]
        detail = f"graph inputs are {names}; the {profile.io} optimization profile is for the one input {expected!r}"
        return [Violation(f"graph input {names[0] if names else '-'}", "-", "dynamic-shape", detail)]
    found = _input_dim_violations(inputs[0], profile)
    symbols = {d.dim_param for d in inputs[0].type.tensor_type.shape.dim if d.dim_param}
    for output in graph.output:
        for axis, dim in enumerate(output.type.tensor_type.shape.dim):
            if dim.dim_value > 0 or dim.dim_param in symbols:
                continue
            found.append(
                Violation(
                    f"graph output {output.name}",
                    "-",
                    "dynamic-shape",
                    f"dimension {axis} ({dim.dim_param or 'unknown'}) is neither static nor one of the input's "
                    f"dimensions ({_listing(symbols) or 'none'}), so no optimization profile bounds it",
                )
            )
    return found


def _input_dim_violations(graph_input: onnx.ValueInfoProto, profile: ProfileShapes) -> list[Violation]:
    dims = graph_input.type.tensor_type.shape.dim
    where = f"graph input {graph_input.name}"
    if len(dims) != len(profile.min):
        detail = f"has rank {len(dims)}; the profile ({profile.describe()}) has rank {len(profile.min)}"
        return [Violation(where, "-", "dynamic-shape", detail)]
    found = []
    for axis, (dim, low, high) in enumerate(zip(dims, profile.min, profile.max, strict=True)):
        if dim.dim_value > 0 and not low == high == dim.dim_value:
            detail = (
                f"dimension {axis} is static ({dim.dim_value}) but the profile sets {low}..{high} there: the model "
                f"only takes {dim.dim_value} (use it in the min, opt and max shapes)"
            )
            found.append(Violation(where, "-", "dynamic-shape", detail))
    return found


def _listing(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
