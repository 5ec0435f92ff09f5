"""The torch-free models are export-engine's: the shipped templates are what the exporter makes today, and a model
built from them equals the exported one (same graph, same weights, same metadata, same outputs).

The templates are generated from the torch networks (cliplit.export.templates), the one source of truth of each graph;
these tests are what keeps the two from drifting apart.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SMALL_PHOTO, photo

from cliplit.core.checkpoint import STUDENT, TEACHER, read_checkpoint
from cliplit.core.contract import model_input_from_rgb, random_model_input
from cliplit.core.errors import CliplitError
from cliplit.core.graphs import (
    COEFFICIENTS_SPEC,
    META_BINDINGS,
    GraphError,
    build_coefficients,
    build_model,
    load_template,
    template_specs,
    weights_from_model,
)
from cliplit.core.images import read_image
from cliplit.export.onnx_export import export_onnx
from cliplit.export.templates import random_network, template
from cliplit.train.checkpoint import load_enhancer, save_enhancer
from cliplit.train.student import StudentConfig, StudentNet

SPECS = template_specs()


def _signature(proto: onnx.ModelProto) -> list:
    """What a graph computes, without the names the exporter happens to give its tensors and nodes."""
    names: dict[str, str] = {}

    def local(name: str) -> str:
        return names.setdefault(name, f"t{len(names)}") if name else ""

    for value in [*proto.graph.input, *proto.graph.initializer]:
        local(value.name)
    nodes = []
    for node in proto.graph.node:
        attributes = []
        for attribute in node.attribute:
            attribute = onnx.AttributeProto.FromString(attribute.SerializeToString())
            attribute.t.name = ""  # a Constant's tensor carries the exporter's name
            attributes.append(attribute.SerializeToString())
        nodes.append((node.op_type, [local(i) for i in node.input], [local(o) for o in node.output], attributes))
    return nodes


def _bindings(proto: onnx.ModelProto) -> list:
    meta = {p.key: p.value for p in proto.metadata_props}
    return [item[1:] for item in json.loads(meta[META_BINDINGS])]  # all but the initializer's name


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_shipped_templates_are_what_the_exporter_makes_now(spec):
    shipped = onnx.load(str(spec.path))
    made = template(spec)
    assert _signature(made) == _signature(shipped), f"{spec.name} drifted: run python -m cliplit.export.templates"
    assert _bindings(made) == _bindings(shipped)
    assert [p for p in shipped.metadata_props if p.key != META_BINDINGS] == [
        p for p in made.metadata_props if p.key != META_BINDINGS
    ]  # a split part's halo


def _outputs(proto: onnx.ModelProto, feed: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})


def _inputs(io: str) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    crop = read_image(photo(SMALL_PHOTO))[301:488, 140:421, ::-1]  # RGB, 281×187: pooling bins overlap
    return [random_model_input(io, 2, 2, 2, rng), random_model_input(io, 1, 7, 9, rng), model_input_from_rgb(io, crop)]


@pytest.fixture(scope="module")
def checkpoints(released_weights, tmp_path_factory):
    """One checkpoint file of each kind a user has: the released weights, a `cliplit train` checkpoint saved in the
    train padding, the shipped student and a distilled student of other widths."""
    folder = tmp_path_factory.mktemp("checkpoints")
    trained = save_enhancer(load_enhancer(released_weights, padding="train").model, folder / "t.pth", padding="train")
    narrow = StudentNet(StudentConfig((8, 8, 16, 24)))
    narrow.load_state_dict(random_network_state(narrow))
    distilled = save_enhancer(narrow, folder / "s.pth", source={"distilled_from": "clip-lit", "fidelity": {"x": 1}})
    return {"released": released_weights, "trained": trained, "student": "clip-lit-rt", "distilled": distilled}


def random_network_state(network: StudentNet) -> dict:
    import torch

    generator = torch.Generator().manual_seed(3)
    return {key: torch.randn(value.shape, generator=generator) * 0.1 for key, value in network.state_dict().items()}


@pytest.mark.parametrize("kind", ["released", "trained", "student", "distilled"])
@pytest.mark.parametrize(
    ("io", "outputs"), [("float", None), ("float", ("enhanced",)), ("float", ("light_map",)), ("uint8", None)]
)
def test_a_model_built_without_torch_equals_the_export(checkpoints, kind, io, outputs, tmp_path):
    weights = checkpoints[kind]
    exported = export_onnx(load_enhancer(weights), tmp_path / "m.onnx", io=io, outputs=outputs).path
    theirs = onnx.load(str(exported))
    ours = build_model(read_checkpoint(weights), io, outputs)
    meta = {p.key: p.value for p in ours.metadata_props}
    assert meta == {p.key: p.value for p in theirs.metadata_props}
    assert ours.doc_string == theirs.doc_string
    assert _signature(ours) == _signature(theirs)
    for feed in _inputs(io):
        for mine, reference in zip(_outputs(ours, feed), _outputs(theirs, feed), strict=True):
            np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6 if io == "float" else 0)


def test_weights_read_back_from_any_teacher_export_are_the_checkpoint(released_weights, float_onnx, uint8_onnx):
    state = read_checkpoint(released_weights).state
    for model in (float_onnx, uint8_onnx):  # uint8: the first convolution's colour channels come back in RGB order
        spec, found = weights_from_model(onnx.load(str(model)))
        assert spec.architecture == TEACHER and spec.padding == "test"
        assert found.keys() == state.keys()
        assert all(np.array_equal(found[key], state[key]) for key in state)


def test_unshipped_graphs_and_mismatched_weights_are_clear_errors(tmp_path):
    three = StudentNet(StudentConfig((8, 16, 16)))
    path = save_enhancer(three, tmp_path / "three.pth")
    with pytest.raises(GraphError, match=r"student with 3 encoder levels.*export-engine"):
        build_model(read_checkpoint(path))
    data = read_checkpoint("clip-lit-rt")
    data.state.pop("head.bias")
    with pytest.raises(CliplitError, match=r"missing \['head.bias'\]"):
        build_model(data)


def test_every_architecture_has_a_template_for_every_io_choice():
    names = {spec.name for spec in SPECS}
    assert {s.architecture for s in SPECS} == {TEACHER, STUDENT}
    assert len(names) == len(SPECS) == 17
    for spec in SPECS:
        _, bindings, _ = load_template(spec)
        assert bindings and all(b.parameter for b in bindings)
    assert random_network(SPECS[0]).padding == SPECS[0].padding


def test_the_coefficients_graph_is_the_students_network_after_its_pooling(tmp_path):
    """The fast path's graph (pooled frame in) gives StudentNet.coefficients of the frame, built from a checkpoint or
    from the weights inside a float export of it."""
    import torch

    from cliplit.train.student import POOL

    data = read_checkpoint("clip-lit-rt")
    network = StudentNet(StudentConfig.from_dict(data.config))
    network.load_state_dict({key: torch.from_numpy(np.asarray(value)) for key, value in data.state.items()})
    exported = export_onnx(load_enhancer("clip-lit-rt"), tmp_path / "rt.onnx").path
    spec, state = weights_from_model(onnx.load(str(exported)))
    assert spec.architecture == STUDENT
    graphs = [build_coefficients(s, model_name="clip-lit-rt", weights_sha256=data.sha256) for s in (data.state, state)]
    for feed in _inputs("float"):
        image = torch.from_numpy(feed)
        pooled = torch.nn.functional.avg_pool2d(image, POOL, POOL, ceil_mode=True, count_include_pad=False)
        with torch.no_grad():
            expected = network.coefficients(image).numpy()
        for graph in graphs:
            (coefficients,) = _outputs(graph, pooled.numpy())
            np.testing.assert_allclose(coefficients, expected, rtol=0, atol=2e-5)
    assert COEFFICIENTS_SPEC in SPECS
