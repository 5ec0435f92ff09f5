"""Write the graph templates the runtime builds its models from without torch (:mod:`cliplit.core.graphs`).

Each template is the graph export-engine writes for one architecture, padding, I/O variant and output choice (or one
half of the teacher's split), with its weights left out. Which parameter fills each weight initializer is found by
value: the network is exported with random weights, all distinct, and each initializer is matched to the one
parameter it equals (as stored, or with its colour channels reversed, as the uint8 variant's BGR input needs);
anything that matches none is a constant of the graph and stays in the template. A weight that matched two
parameters, or a parameter left unused by a full model, fails the generation.

Regenerate after changing a network or an export (``python -m cliplit.export.templates``); tests/test_graphs.py
fails until the shipped templates equal what this writes.
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from cliplit.core.atomic import atomic_output
from cliplit.core.checkpoint import TEACHER
from cliplit.core.graphs import (
    COEFFICIENTS,
    COEFFICIENTS_INPUT,
    COEFFICIENTS_OUTPUT,
    META_BINDINGS,
    TEMPLATE_DIR,
    TEMPLATE_OPSET,
    Binding,
    GraphSpec,
    reverse_colour_channels,
    template_specs,
)
from cliplit.core.split_contract import META_HALO
from cliplit.export.onnx_export import onnx_graph
from cliplit.export.tiled_export import split_graphs
from cliplit.train.network import LightMapNet
from cliplit.train.student import StudentNet


def random_network(spec: GraphSpec, seed: int = 0) -> LightMapNet | StudentNet:
    """The architecture of ``spec`` with every parameter drawn at random, so no two weights are equal."""
    network = LightMapNet(spec.padding) if spec.architecture == TEACHER else StudentNet()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return network.eval()


def template(spec: GraphSpec) -> onnx.ModelProto:
    """The template of ``spec``: its exported graph, weights removed, bindings (and a split part's halo) recorded."""
    network = random_network(spec)
    meta: dict[str, str] = {}
    if spec.io == COEFFICIENTS:
        proto = coefficients_graph(network, TEMPLATE_OPSET)
    elif spec.split_part is None:
        proto = onnx_graph(network, spec.io, spec.outputs, TEMPLATE_OPSET)
    else:
        head, tail, halos = split_graphs(network, TEMPLATE_OPSET)
        proto, halo = (head, halos[0]) if spec.split_part == "head" else (tail, halos[1])
        meta[META_HALO] = str(halo)
    state = {key: value.numpy() for key, value in network.state_dict().items()}
    bindings = _bind(proto, state)
    if spec.split_part is None and (unused := sorted(set(state) - {b.parameter for b in bindings})):
        raise RuntimeError(f"{spec.name}: parameters {unused[:5]} are in no initializer of the exported graph")
    for initializer in proto.graph.initializer:
        if initializer.name in {b.initializer for b in bindings}:
            initializer.ClearField("raw_data")
            initializer.ClearField("float_data")
    meta[META_BINDINGS] = json.dumps([b.to_json() for b in bindings])
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = f"cliplit graph template {spec.name}: weights left out (see cliplit.core.graphs)"
    return proto


class _Coefficients(torch.nn.Module):
    def __init__(self, network: StudentNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network.coefficients(image)


def coefficients_graph(network: StudentNet, opset: int) -> onnx.ModelProto:
    """``StudentNet.coefficients`` exported, with its input pooling cut off: the graph starts from the pooled frame,
    which the runtime computes exactly from the 8-bit frame without a float copy of it (the one AveragePool node that
    reads the image is removed, and its readers read the new input instead)."""
    buffer = io.BytesIO()
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and deprecation chatter
        torch.onnx.export(
            _Coefficients(network),
            (torch.rand(1, 3, 67, 93, generator=torch.Generator().manual_seed(0)),),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=[COEFFICIENTS_OUTPUT],
            dynamic_axes={"image": dims, COEFFICIENTS_OUTPUT: dims},
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    graph = proto.graph
    (pool,) = [node for node in graph.node if node.op_type == "AveragePool" and node.input[0] == "image"]
    for node in graph.node:
        node.input[:] = [COEFFICIENTS_INPUT if name == pool.output[0] else name for name in node.input]
    graph.node.remove(pool)
    (image,) = graph.input
    image.name = COEFFICIENTS_INPUT
    return proto


def _bind(proto: onnx.ModelProto, state: dict[str, np.ndarray]) -> list[Binding]:
    readers: dict[str, tuple[str, int, int]] = {}
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        ordinal = counts.get(node.op_type, 0)
        counts[node.op_type] = ordinal + 1
        for index, name in enumerate(node.input):
            readers.setdefault(name, (node.op_type, ordinal, index))
    bindings = []
    for initializer in proto.graph.initializer:
        value = numpy_helper.to_array(initializer)
        matches = [
            (key, bgr)
            for key, parameter in state.items()
            for bgr in ((False, True) if parameter.ndim == 4 and parameter.shape[1] >= 3 else (False,))
            if parameter.size == value.size
            and np.array_equal((reverse_colour_channels(parameter) if bgr else parameter).reshape(value.shape), value)
        ]
        if len(matches) > 1:
            raise RuntimeError(f"initializer {initializer.name} equals several parameters: {matches}")
        if matches:
            (key, bgr), reader = matches[0], readers[initializer.name]
            bindings.append(Binding(initializer.name, key, tuple(state[key].shape), bgr, *reader))
    return bindings


def write_templates(directory: Path = TEMPLATE_DIR, specs: Sequence[GraphSpec] | None = None) -> list[Path]:
    """Write the template of every spec (default: all that cliplit ships) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in specs or template_specs():
        path = directory / spec.path.name
        with atomic_output(path) as tmp:
            onnx.save(template(spec), str(tmp))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the graph templates shipped in cliplit.core.")
    parser.add_argument("--out", type=Path, default=TEMPLATE_DIR, help="folder to write them to (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in write_templates(args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
