"""Every shipped architecture's ONNX graphs, built from weights with ONNX and NumPy only (no torch).

A deployment needs no PyTorch: the graphs are fixed and the weights are a few hundred kilobytes of tensors. The
exporter (:mod:`cliplit.export.templates`) writes each graph the toolkit can build as a **template** in
``core/templates/``: exactly the graph ``export-engine`` writes, with the weights left out and, in its metadata, a
binding for every weight initializer — which checkpoint parameter fills it, its shape there, whether the parameter's
colour channels are reversed (the uint8 variant takes B, G, R; ``with_bgr_input``) and which node reads it (the k-th
node of its type, input i). The torch module stays the one source of truth for each graph: a test regenerates the
templates and checks that they equal the shipped ones and that the models built here equal ``export-engine``'s.

Built here: a full model (:func:`build_model`) from a checkpoint's arrays, the two halves of the teacher split for
tiled inference (:func:`build_split`), from a checkpoint or from any cliplit ONNX export of the teacher, whose
weights are read back through the same bindings (:func:`weights_from_model`), and the student's 1/4-resolution half
(:func:`build_coefficients`), which the runtime's fast path for the student runs (``cliplit.runtime.student_fast``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from cliplit.core.checkpoint import STUDENT, STUDENT_PADDING, TEACHER, TEACHER_PADDINGS, CheckpointData, CheckpointError
from cliplit.core.contract import (
    IO_SPECS,
    META_IO,
    META_MODEL_NAME,
    META_OUTPUTS,
    META_PADDING,
    META_TEACHER,
    META_VERSION,
    META_WEIGHTS_SHA256,
    io_spec,
    model_doc_string,
    model_metadata,
    outputs_from_metadata,
)
from cliplit.core.errors import CliplitError
from cliplit.core.split_contract import META_HALO, SPLIT_PARTS, split_metadata
from cliplit.core.version import cliplit_version

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
#: the opset of every template (export-engine's default); other opsets need export-engine
TEMPLATE_OPSET = 17
#: metadata keys of a template: its bindings (JSON) and, for a split part, its halo
META_BINDINGS = "cliplit.template.bindings"
#: the student's encoder levels the shipped templates are made for (its default widths' count; the widths themselves
#: are read from the weights)
STUDENT_LEVELS = 4
#: the ``io`` of the student's coefficients graph: input ``pooled`` (N×3×h×w RGB in [0, 1], the frame average-pooled
#: 4×4 with partial windows at the right and bottom, as the student's ``ceil_mode`` pooling), output ``coefficients``
#: (N×2×h×w: the slope and offset of the log light map in the luma, ``StudentNet.coefficients``)
COEFFICIENTS = "coefficients"
COEFFICIENTS_INPUT = "pooled"
COEFFICIENTS_OUTPUT = "coefficients"


class GraphError(CliplitError):
    """No shipped graph fits a model, or its weights do not fit the graph."""


@dataclass(frozen=True)
class GraphSpec:
    """One template: architecture, padding variant, and ``io`` (``float``, ``uint8`` or ``split-head``/``-tail``)
    with the contract's ``outputs`` (empty for split parts)."""

    architecture: str
    padding: str
    io: str
    outputs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        parts = (self.architecture, self.padding, self.io, "+".join(self.outputs))
        return ".".join(part for part in parts if part)

    @property
    def path(self) -> Path:
        return TEMPLATE_DIR / f"{self.name}.onnx"

    @property
    def split_part(self) -> str | None:
        return self.io.removeprefix("split-") if self.io.startswith("split-") else None


#: the student's coefficients graph (see :func:`build_coefficients`)
COEFFICIENTS_SPEC = GraphSpec(STUDENT, STUDENT_PADDING, COEFFICIENTS)


def _output_choices(io: str) -> list[tuple[str, ...]]:
    """Every choice of outputs of variant ``io``: all of them, then each alone (for a single-output model)."""
    names = IO_SPECS[io].output_names
    return [names] + ([(name,) for name in names] if len(names) > 1 else [])


def template_specs() -> list[GraphSpec]:
    """Every graph cliplit ships a template for: the teacher in both paddings and the student, each I/O variant and
    output choice, and the teacher's split parts."""
    full = [
        GraphSpec(architecture, padding, io, outputs)
        for architecture, paddings in ((TEACHER, TEACHER_PADDINGS), (STUDENT, (STUDENT_PADDING,)))
        for padding in paddings
        for io in IO_SPECS
        for outputs in _output_choices(io)
    ]
    split = [GraphSpec(TEACHER, padding, f"split-{part}") for padding in TEACHER_PADDINGS for part in SPLIT_PARTS]
    return [*full, *split, COEFFICIENTS_SPEC]


@dataclass(frozen=True)
class Binding:
    """Where one weight initializer of a template comes from and which node reads it."""

    initializer: str
    parameter: str
    shape: tuple[int, ...]
    bgr: bool
    op_type: str
    ordinal: int
    input_index: int

    def to_json(self) -> list:
        return [self.initializer, self.parameter, list(self.shape), self.bgr, self.op_type, self.ordinal,
                self.input_index]  # fmt: skip

    @classmethod
    def from_json(cls, item: list) -> Binding:
        name, parameter, shape, bgr, op_type, ordinal, input_index = item
        return cls(name, parameter, tuple(shape), bool(bgr), op_type, int(ordinal), int(input_index))


def reverse_colour_channels(array: np.ndarray) -> np.ndarray:
    """A first convolution's weights with input channels 0-2 reversed (RGB ⇄ BGR); its own inverse."""
    flipped = array.copy()
    flipped[:, :3] = array[:, 2::-1]
    return flipped


@functools.cache
def _template(name: str) -> bytes:
    path = TEMPLATE_DIR / f"{name}.onnx"
    if not path.is_file():
        raise GraphError(f"the graph template {path} should ship inside cliplit but is missing; reinstall cliplit")
    return path.read_bytes()


def load_template(spec: GraphSpec) -> tuple[onnx.ModelProto, list[Binding], dict[str, str]]:
    """The template of ``spec`` (a fresh copy), its bindings and its other metadata."""
    proto = onnx.load_from_string(_template(spec.name))
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    bindings = [Binding.from_json(item) for item in json.loads(meta.pop(META_BINDINGS))]
    return proto, bindings, meta


def spec_for(data: CheckpointData, io: str, outputs: Sequence[str] | None = None) -> GraphSpec:
    """The template that builds ``data``'s network in variant ``io`` with ``outputs``, or a clear error where none
    ships (then export-engine, with PyTorch, can export it)."""
    chosen = io_spec(io, outputs).output_names
    if data.is_student:
        levels = len(data.config.get("widths", ())) or STUDENT_LEVELS
        if levels != STUDENT_LEVELS:
            raise GraphError(
                f"{data.name} is a student with {levels} encoder levels; cliplit ships graphs for {STUDENT_LEVELS} "
                f"levels only: export it with `export-engine --weights {data.name}.pth --onnx model.onnx` where "
                "PyTorch is installed, and pass the .onnx file as --model"
            )
    return GraphSpec(data.architecture, data.padding, io, chosen)


def build_model(data: CheckpointData, io: str = "float", outputs: Sequence[str] | None = None) -> onnx.ModelProto:
    """The ONNX model of ``data`` in variant ``io`` with ``outputs`` (default: all), as export-engine writes it."""
    spec = spec_for(data, io, outputs)
    meta = model_metadata(
        io,
        spec.outputs,
        model_name=data.name,
        weights_sha256=data.sha256,
        padding=data.padding,
        source=data.source,
        opset=TEMPLATE_OPSET,
    )
    return _fill(spec, data.state, meta, model_doc_string(data.name), strict=True)


def build_split(
    state: Mapping[str, np.ndarray], padding: str, *, model_name: str, weights_sha256: str
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The head and tail graphs of the teacher with ``state``'s weights, for tiled inference
    (:mod:`cliplit.core.split_contract`)."""
    parts = []
    for part in SPLIT_PARTS:
        spec = GraphSpec(TEACHER, padding, f"split-{part}")
        halo = int(load_template(spec)[2][META_HALO])
        meta = split_metadata(
            part,
            halo,
            model_name=model_name,
            weights_sha256=weights_sha256,
            opset=TEMPLATE_OPSET,
            version=cliplit_version(),
            padding=padding,
        )
        parts.append(_fill(spec, state, meta, model_doc_string(model_name, part), strict=False))
    return parts[0], parts[1]


def build_coefficients(state: Mapping[str, np.ndarray], *, model_name: str, weights_sha256: str) -> onnx.ModelProto:
    """The student's 1/4-resolution half with ``state``'s weights: the pooled frame in, the two coefficient maps out
    (``COEFFICIENTS_INPUT``/``COEFFICIENTS_OUTPUT``). What stays at full resolution (bilinear upsampling of the
    maps, the luma, ``exp``, the division) is one fused pass in the runtime, which no graph of separate operators
    matches in speed; the whole model remains the export for other hosts."""
    meta = {META_MODEL_NAME: model_name, META_WEIGHTS_SHA256: weights_sha256, META_VERSION: cliplit_version()}
    doc = f"{model_name}: the student's coefficients at 1/4 resolution"
    return _fill(COEFFICIENTS_SPEC, state, meta, doc, strict=True)


def _fill(
    spec: GraphSpec, state: Mapping[str, np.ndarray], meta: dict[str, str], doc: str, *, strict: bool
) -> onnx.ModelProto:
    """The template with every bound initializer set from ``state`` and ``meta`` as its metadata. ``strict``: every
    parameter of ``state`` must be used (a full model uses them all, a split part some)."""
    proto, bindings, _ = load_template(spec)
    by_name = {binding.initializer: binding for binding in bindings}
    missing = sorted({b.parameter for b in bindings} - set(state))
    unused = sorted(set(state) - {b.parameter for b in bindings}) if strict else []
    if missing or unused:
        raise CheckpointError(
            f"the weights do not fit the {spec.architecture} network (missing {missing[:5]}, unexpected {unused[:5]})"
        )
    for initializer in proto.graph.initializer:
        binding = by_name.get(initializer.name)
        if binding is None:
            continue
        array = np.asarray(state[binding.parameter], dtype=np.float32)
        if binding.bgr:
            array = reverse_colour_channels(array)
        target = tuple(initializer.dims)
        if int(np.prod(target)) == array.size:
            array = array.reshape(target)  # e.g. a PReLU's slope, stored 1×1×1 in the graph
        elif array.ndim != len(target):
            raise CheckpointError(f"{binding.parameter} has shape {array.shape}, the graph needs {target}")
        initializer.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), initializer.name))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    proto.doc_string = doc
    return proto


def spec_of_model(proto: onnx.ModelProto) -> GraphSpec:
    """The template a cliplit ONNX export was made from, read from its metadata (a student's exports name their
    teacher)."""
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    io, padding = meta.get(META_IO), meta.get(META_PADDING)
    if io not in IO_SPECS or padding is None:
        raise GraphError("the model has no cliplit metadata (cliplit.io, cliplit.padding_variant)")
    architecture = STUDENT if META_TEACHER in meta or padding == STUDENT_PADDING else TEACHER
    outputs = outputs_from_metadata(io, meta) if META_OUTPUTS in meta else IO_SPECS[io].output_names
    return GraphSpec(architecture, padding, io, outputs)


def weights_from_model(proto: onnx.ModelProto) -> tuple[GraphSpec, dict[str, np.ndarray]]:
    """The checkpoint parameters inside a cliplit ONNX export, found through its template's bindings: the k-th node
    of each type reads the same parameter in every export of that graph, whatever the initializers are called."""
    spec = spec_of_model(proto)
    _, bindings, _ = load_template(spec)
    nodes: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        nodes.setdefault(node.op_type, []).append(node)
    initializers = {init.name: init for init in proto.graph.initializer}
    state: dict[str, np.ndarray] = {}
    for binding in bindings:
        readers = nodes.get(binding.op_type, [])
        name = readers[binding.ordinal].input[binding.input_index] if binding.ordinal < len(readers) else None
        if name not in initializers:
            raise GraphError(
                f"the model's graph differs from cliplit's {spec.name} graph (no weight at {binding.op_type} "
                f"#{binding.ordinal}); was it exported by another version or edited?"
            )
        array = numpy_helper.to_array(initializers[name]).astype(np.float32)
        if array.size == int(np.prod(binding.shape)):
            array = array.reshape(binding.shape)  # e.g. a PReLU's slope, stored 1×1×1 in the graph
        elif array.ndim != len(binding.shape):  # other sizes of the same rank: a student of other widths (_fill)
            raise GraphError(f"the model's {binding.parameter} has shape {array.shape}, the graph's is {binding.shape}")
        state[binding.parameter] = reverse_colour_channels(array) if binding.bgr else array
    return spec, state
