"""The bench's backend table: runtime entries are opened through the runtime's registry with the options a user
passes, each honoured by its backend; the PyTorch variants are bench-only and say so."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime
import pytest

from cliplit.benchmarks.registry import (
    BACKENDS,
    SCALE_BASES,
    BackendUnavailable,
    BenchContext,
    RuntimeSetup,
    scaled_entries,
)
from cliplit.benchmarks.variants import TORCH_VARIANTS
from cliplit.runtime.backends import REGISTRY, options_class, options_for
from cliplit.runtime.backends.onnxruntime import PREFERRED_PROVIDERS, default_providers

RUNTIME = {name: entry for name, entry in BACKENDS.items() if entry.runtime is not None}


@pytest.fixture
def every_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """An onnxruntime build with the GPU providers, so the GPU entries' options can be built on any machine."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(PREFERRED_PROVIDERS))


def test_every_entry_is_a_runtime_backend_or_a_named_bench_only_variant():
    bench_only = {name for name, entry in BACKENDS.items() if entry.bench_only}
    assert bench_only == set(TORCH_VARIANTS), "only the PyTorch tricks are bench-only"
    for name in bench_only:
        assert BACKENDS[name].description.startswith("bench-only: "), name
    for name, entry in RUNTIME.items():
        assert entry.runtime.backend in REGISTRY, name
        assert "bench-only" not in entry.description, name
    assert set(SCALE_BASES) <= set(RUNTIME), "--scale runs the runtime's Enhancer around runtime backends only"
    assert all(RUNTIME[name].runtime.io == "float" for name in SCALE_BASES), "scaling needs the light map"


@pytest.mark.usefixtures("every_provider")
@pytest.mark.parametrize("name", sorted(RUNTIME))
def test_runtime_entries_pass_only_options_their_backend_honours(name):
    setup = RUNTIME[name].runtime
    values = setup.options(BenchContext("clip-lit", "cpu", threads=2, gpu_index=1))
    options = options_class(setup.backend)(**values)  # a field the options lack raises TypeError
    assert options == options_for(setup.backend, **values)
    assert {key for key, value in values.items() if value is not None} <= {
        field.name for field in dataclasses.fields(options)
    }


@pytest.mark.usefixtures("every_provider")
def test_onnxruntime_providers_are_the_runtimes_own_settings():
    """No precision or cache of the bench's choosing: the TensorRT provider runs as `cliplit enhance` sets it up."""
    # what `cliplit enhance --backend onnxruntime --device 1` gets, by provider
    runtime = {item if isinstance(item, str) else item[0]: item for item in default_providers(1)}
    context = BenchContext("clip-lit", "cpu", gpu_index=1)
    for name, provider in [
        ("onnxruntime-trt", "TensorrtExecutionProvider"),
        ("onnxruntime-cuda", "CUDAExecutionProvider"),
    ]:
        providers = RUNTIME[name].runtime.options(context)["providers"]
        assert providers == (runtime[provider], "CPUExecutionProvider"), name
        assert RUNTIME[name].precision == "float32" and RUNTIME[name].peak_device(context) == "cuda"
    assert RUNTIME["onnxruntime"].runtime.options(context)["providers"] == ("CPUExecutionProvider",)


def test_a_provider_this_onnxruntime_lacks_makes_the_entry_unavailable(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="no CUDAExecutionProvider"):
        BACKENDS["onnxruntime-cuda"].build(BenchContext("clip-lit", "cpu"))


def test_runtime_entries_are_opened_by_open_backend(monkeypatch, released_weights):
    """The bench builds no backend class itself: it hands the model and the options to the runtime's registry."""
    import cliplit.runtime.backends as backends

    opened = []
    real = backends.open_backend

    def spy(model, options):
        opened.append((model, options))
        return real(model, options)

    monkeypatch.setattr(backends, "open_backend", spy)
    context = BenchContext(str(released_weights), "cpu", threads=1)
    with BACKENDS["onnxruntime-uint8"].build(context) as backend:
        assert backend.io == "uint8" and backend.details()["providers"] == ["CPUExecutionProvider"]
        frame = np.zeros((1, 16, 24, 3), np.uint8)
        assert backend.run(frame)["enhanced"].shape == frame.shape
    [(model, options)] = opened
    assert str(model).endswith(".onnx")
    assert options == options_for("onnxruntime", threads=1, providers=("CPUExecutionProvider",))


def test_runtime_errors_make_the_entry_unavailable_with_the_runtimes_reason(tmp_path):
    with pytest.raises(BackendUnavailable, match="pass --engine"):
        BACKENDS["tensorrt"].build(BenchContext("clip-lit", "cpu"))
    missing = tmp_path / "missing.engine"
    with pytest.raises(BackendUnavailable, match="no such engine file"):
        BACKENDS["tensorrt"].build(BenchContext("clip-lit", "cpu", engine=missing))


def test_scaled_entries_keep_their_base_runtime_setup():
    [entry] = scaled_entries(["onnxruntime-rt", "torch"], [0.5], "guided")
    base = BACKENDS["onnxruntime-rt"]
    assert entry.name == "onnxruntime-rt@scale0.5" and entry.runtime == base.runtime
    assert entry.weights == "clip-lit-rt" and not entry.bench_only


def test_student_setup_runs_the_student_whatever_the_weights(monkeypatch):
    seen = []
    monkeypatch.setattr(
        "cliplit.runtime.models.ensure_onnx", lambda weights, io: seen.append((weights, io)) or "x.onnx"
    )
    assert (
        RuntimeSetup("onnxruntime", "uint8", weights="clip-lit-rt").model(BenchContext("clip-lit", "cpu")) == "x.onnx"
    )
    assert seen == [("clip-lit-rt", "uint8")]
