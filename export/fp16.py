"""An FP16 copy of an exported model for TensorRT 11, whose networks are always strongly typed.

TensorRT 11 removed ``BuilderFlag.FP16``: an engine computes in the types its ONNX graph states, so FP16 inference
needs an FP16 graph. Only the network itself (every node the exporter scoped under ``/enhancer/``) is converted; the
I/O tensors and the wrapper's pre- and post-processing keep FP32: the uint8 variant's colour swap and scaling, the
guarded division x / max(L, eps) and the clamps (and for uint8 the rounding). The division is where FP16 would hurt:
near-zero light maps turn small errors into large ones, and 1e-6 is not a normal FP16 number.

The conversion is done here rather than with onnxconverter-common's ``convert_float_to_float16``: with
``keep_io_types`` and a node block list (its 1.16 release) it left the graph failing ONNX type inference (the
network's Cast-to-float nodes keep FP32 while their outputs are declared FP16), turned the float model's
``enhanced`` output into FP16 (it is produced by a blocked node) and rounded the blocked nodes' constants through
FP16. This graph needs four rules: FP16 weights and constants inside the network, Cast-to-float made Cast-to-half
there, and a Cast at every edge between the network and the FP32 part; the result is checked by onnx.checker.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from cliplit.core.errors import CliplitError

# FloatIO and Uint8IO (cliplit.export.onnx_export) hold the network as their ``enhancer`` attribute, and the
# TorchScript exporter names every node after the module path it came from.
NETWORK_SCOPE = "/enhancer/"
FP16_MAX = float(np.finfo(np.float16).max)


def split_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Names of the network's nodes and of the wrapper's pre/post-processing nodes (kept FP32), in graph order.

    Raises ``CliplitError`` for graphs that are not a cliplit export (no network nodes, or no final division and
    clamp outside the network), so a model from elsewhere is never half converted.
    """
    network = [node.name for node in model.graph.node if node.name.startswith(NETWORK_SCOPE)]
    wrapper = [node.name for node in model.graph.node if not node.name.startswith(NETWORK_SCOPE)]
    wrapper_ops = {node.op_type for node in model.graph.node if not node.name.startswith(NETWORK_SCOPE)}
    if not network or not {"Div", "Clip"} <= wrapper_ops:
        raise CliplitError(
            f"this ONNX model is not a cliplit export: expected the network under {NETWORK_SCOPE!r} and the final "
            "Div and Clip outside it; export it with export-engine"
        )
    return network, wrapper


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` whose network computes in FP16 while I/O and pre/post-processing stay FP32."""
    network_names = set(split_nodes(model)[0])
    types = _tensor_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    network = [node for node in graph.node if node.name in network_names]
    produced_inside = {name for node in network for name in node.output if name}
    consumed_outside = {name for node in graph.node if node.name not in network_names for name in node.input}
    consumed_outside |= {output.name for output in graph.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    initializer_users = _consumers(graph, initializers)

    for node in network:
        _make_half(node)
    converted: set[str] = set()  # initializers used only by the network, rewritten in place
    renamed: dict[str, str] = {}  # FP32 name -> FP16 name, as seen by the network's nodes
    casts_after: dict[str, onnx.NodeProto] = {}  # tensor -> Cast node that must follow its producer
    leading_casts: list[onnx.NodeProto] = []
    for node in network:
        for name in node.input:
            if name in renamed or name in converted or name in produced_inside:
                continue
            if types.get(name) != TensorProto.FLOAT:
                continue
            if name in initializers and initializer_users[name] <= network_names:
                _convert_initializer(initializers[name])
                converted.add(name)
                continue
            renamed[name] = f"{name}/fp16"
            cast = _cast(name, renamed[name], TensorProto.FLOAT16)
            if name in initializers or name in {graph_input.name for graph_input in graph.input}:
                leading_casts.append(cast)
            else:
                casts_after[name] = cast
        for name in node.output:
            if name in consumed_outside and types.get(name) == TensorProto.FLOAT:
                renamed[name] = f"{name}/fp16"
                casts_after[name] = _cast(renamed[name], name, TensorProto.FLOAT)
    for node in network:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]

    ordered = list(leading_casts)
    for node in graph.node:
        ordered.append(node)
        original_outputs = [name for name in casts_after if renamed[name] in node.output or name in node.output]
        ordered.extend(casts_after[name] for name in original_outputs)
    graph.ClearField("node")
    graph.node.extend(ordered)
    graph.ClearField("value_info")  # the FP32 types inferred for the network's tensors no longer hold
    out.doc_string = f"{model.doc_string} [network in FP16, I/O and pre/post-processing in FP32]".strip()
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    onnx.checker.check_model(out, full_check=True)
    return out


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor in the graph (inputs, initializers, intermediates, outputs)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    types = {info.name: info.type.tensor_type.elem_type for info in (*graph.input, *graph.value_info, *graph.output)}
    types.update({tensor.name: tensor.data_type for tensor in graph.initializer})
    return types


def _consumers(graph: onnx.GraphProto, names: dict[str, TensorProto]) -> dict[str, set[str]]:
    users: dict[str, set[str]] = {name: set() for name in names}
    for node in graph.node:
        for name in node.input:
            if name in users:
                users[name].add(node.name)
    return users


def _make_half(node: onnx.NodeProto) -> None:
    """Turn a network node's FP32 constants (Constant, ConstantOfShape values) and Cast-to-float into FP16."""
    if node.op_type == "Constant" and any(a.name in ("value_float", "value_floats") for a in node.attribute):
        raise CliplitError(f"FP16 conversion: unsupported scalar-float Constant {node.name}")
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            raise CliplitError(f"FP16 conversion: unsupported subgraph in {node.op_type} node {node.name}")
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT:
            _convert_initializer(attribute.t)
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
            attribute.i = TensorProto.FLOAT16


def _convert_initializer(tensor: TensorProto) -> None:
    """Rewrite an FP32 tensor in place as FP16, saturating at the largest finite FP16 value."""
    values = numpy_helper.to_array(tensor)
    half = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
    tensor.CopyFrom(numpy_helper.from_array(half, tensor.name))


def _cast(source: str, target: str, to: int) -> onnx.NodeProto:
    suffix = "to_fp16" if to == TensorProto.FLOAT16 else "to_fp32"
    return onnx.helper.make_node("Cast", [source], [target], name=f"{source}/{suffix}", to=to)
