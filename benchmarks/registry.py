"""The one table of what ``cliplit bench`` measures: runtime backends as users get them, and bench-only variants.

A runtime entry is a :class:`RuntimeSetup`: a backend of the runtime's registry (``cliplit.runtime.backends``) with
the options a user passes to ``cliplit enhance --backend B`` (``--precision``, and ``--threads``/``--device`` from
the bench's own flags), opened with ``open_backend`` as every CLI opens it, so the bench times the configuration
users run and nothing else. Where one runtime backend has several execution paths (ONNX Runtime's providers), an
entry keeps one of the runtime's own provider settings instead of writing its own. The PyTorch variants
(channels_last, FP16 autocast, torch.compile, CUDA graphs) exist only to compare against: they are bench-only
entries (``cliplit.benchmarks.variants``), marked so in their descriptions and records. Each entry can say why it
cannot run on this machine; the suite records that reason and goes on with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.base import Backend

#: ONNX Runtime's execution providers, as the entries name them
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


class BackendUnavailable(Exception):
    """A backend cannot run here (no GPU, provider or engine missing); the message says why."""


@dataclass
class BenchContext:
    """What backends are built from: the weights, an optional engine, the devices and thread count."""

    weights: str
    device: str  # "cpu" or "cuda": where PyTorch runs
    engine: Path | None = None
    threads: int | None = None
    gpu_index: int = 0


@dataclass(frozen=True)
class RuntimeSetup:
    """A runtime backend configured as a user configures it; ``build`` opens it through the runtime's registry."""

    backend: str  # a name in cliplit.runtime.backends.REGISTRY
    io: str = "float"  # the export of the weights an ONNX backend runs: "float" or "uint8"
    precision: str | None = None  # OpenVINO's --precision
    provider: str | None = None  # ONNX Runtime: run on this one of the runtime's providers (CPU takes the rest)
    weights: str | None = None  # the weights it runs whatever --weights says (the student's entries)

    def options(self, context: BenchContext) -> dict[str, object]:
        """The options a user would pass, only those this backend honours (another is refused, not ignored)."""
        return _OPTIONS[self.backend](self, context)

    def model(self, context: BenchContext) -> str | Path:
        """What the backend runs, as a user names it: the weights, their cached ONNX export, or the engine."""
        from cliplit.runtime.backends import REGISTRY

        runs = REGISTRY[self.backend].runs
        weights = self.weights or context.weights
        if runs == "engine":
            if context.engine is None:
                raise BackendUnavailable(
                    "no engine given: pass --engine model.engine (build one with export-engine --engine)"
                )
            return context.engine
        if runs == "onnx":
            from cliplit.runtime.models import ensure_onnx

            return ensure_onnx(weights, self.io)  # the runtime's own cached export, as `cliplit enhance` runs it
        return weights

    def build(self, context: BenchContext) -> Backend:
        """``open_backend(model, options)``; the runtime's clear errors (not installed, no such engine, a precision
        this CPU lacks) make the entry unavailable, and a GPU provider must really be the session's first."""
        from cliplit.runtime.backends import open_backend, options_for

        try:
            backend = open_backend(self.model(context), options_for(self.backend, **self.options(context)))
        except CliplitError as error:
            raise BackendUnavailable(str(error)) from error
        providers = backend.details().get("providers")
        if self.provider is not None and providers and providers[0] != self.provider:
            backend.close()
            raise BackendUnavailable(f"{self.provider} failed to initialise; ONNX Runtime fell back to {providers}")
        return backend


def _onnxruntime_options(setup: RuntimeSetup, context: BenchContext) -> dict[str, object]:
    return {"threads": context.threads, "providers": _providers(setup.provider, context.gpu_index)}


def _openvino_options(setup: RuntimeSetup, context: BenchContext) -> dict[str, object]:
    return {"threads": context.threads, "precision": setup.precision}


def _tensorrt_options(setup: RuntimeSetup, context: BenchContext) -> dict[str, object]:
    return {"device": context.gpu_index}


def _torch_options(setup: RuntimeSetup, context: BenchContext) -> dict[str, object]:
    return {"device": context.gpu_index, "cpu_only": context.device == "cpu", "threads": context.threads}


#: the options each runtime backend takes from a setup and the bench's flags
_OPTIONS: dict[str, Callable[[RuntimeSetup, BenchContext], dict[str, object]]] = {
    "onnxruntime": _onnxruntime_options,
    "openvino": _openvino_options,
    "tensorrt": _tensorrt_options,
    "torch": _torch_options,
}


def _providers(provider: str | None, device: int) -> tuple[str | tuple[str, dict[str, str]], ...] | None:
    """The runtime's own setting of ``provider`` (``default_providers``: GPU index, engine cache, no precision of
    the bench's choosing) followed by the CPU provider for what it does not take; None: the runtime's default list."""
    if provider is None:
        return None
    from cliplit.runtime.backends.onnxruntime import default_providers

    settings = {item if isinstance(item, str) else item[0]: item for item in default_providers(device)}
    if provider not in settings:
        raise BackendUnavailable(
            f"this onnxruntime build has no {provider} (install onnxruntime-gpu and the CUDA/TensorRT libraries)"
        )
    return (settings[provider],) if provider == CPU else (settings[provider], CPU)


@dataclass(frozen=True)
class BackendEntry:
    """One benchmarkable backend: how to build it and what hardware/precision its numbers mean."""

    name: str
    description: str
    build: Callable[[BenchContext], Backend]
    precision: str = "float32"  # the arithmetic it mostly runs in ("bfloat16", ...): picks the peak it is compared with
    runs_on: str = "cpu"  # "cpu", "cuda", or "torch": wherever PyTorch runs on this machine
    runtime: RuntimeSetup | None = None  # how the runtime's registry builds it; None: a bench-only variant

    @property
    def bench_only(self) -> bool:
        """Whether no runtime backend runs this configuration (it is measured only to compare with)."""
        return self.runtime is None

    @property
    def weights(self) -> str | None:
        """The weights it runs whatever --weights says, if any."""
        return self.runtime.weights if self.runtime is not None else None

    def peak_device(self, context: BenchContext) -> str:
        """Where its arithmetic runs here ("cpu" or "cuda"), for its peak and its clock."""
        return context.device if self.runs_on == "torch" else self.runs_on


def _runtime(name: str, description: str, setup: RuntimeSetup, precision: str = "float32") -> BackendEntry:
    gpu = setup.backend == "tensorrt" or setup.provider in (CUDA, TRT)
    runs_on = "cuda" if gpu else "torch" if setup.backend == "torch" else "cpu"
    return BackendEntry(name, description, setup.build, precision, runs_on, setup)


def _bench_only(name: str, description: str, precision: str = "float32") -> BackendEntry:
    def build(context: BenchContext) -> Backend:
        from cliplit.benchmarks.variants import TorchVariant, unavailable_reason

        reason = unavailable_reason(name, context.device)
        if reason is not None:
            raise BackendUnavailable(reason)
        return TorchVariant(context.weights, name, context.device, threads=context.threads)

    return BackendEntry(name, f"bench-only: {description}", build, precision, "torch")


STUDENT_WEIGHTS = "clip-lit-rt"

BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        _runtime(
            "torch", "PyTorch eager FP32 (--backend torch: the official inference; the baseline)", RuntimeSetup("torch")
        ),
        _bench_only("torch-channels-last", "PyTorch eager FP32, channels_last"),
        _bench_only("torch-fp16", "PyTorch eager, FP16 autocast", "float16"),
        _bench_only("torch-compile", "torch.compile (Inductor) FP32, static shapes"),
        _bench_only("torch-fp16-cudagraphs", "torch.compile reduce-overhead (CUDA graphs), FP16 autocast", "float16"),
        _runtime(
            "onnxruntime",
            "ONNX Runtime CPU, float export (dynamic shapes)",
            RuntimeSetup("onnxruntime", provider=CPU),
        ),
        _runtime(
            "onnxruntime-uint8",
            "ONNX Runtime CPU, uint8 export (BGR frames in/out, pre/post in the graph)",
            RuntimeSetup("onnxruntime", "uint8", provider=CPU),
        ),
        _runtime(
            "openvino",
            "OpenVINO CPU, FP32, float export (--backend openvino --precision fp32)",
            RuntimeSetup("openvino", precision="fp32"),
        ),
        _runtime(
            "openvino-bf16",
            "OpenVINO CPU, bf16 inference precision, float export (what auto picks on CPUs with AVX512_BF16 or AMX)",
            RuntimeSetup("openvino", precision="bf16"),
            "bfloat16",
        ),
        _runtime(
            "openvino-bf16-uint8",
            "OpenVINO CPU, bf16, uint8 export (BGR frames in/out, pre/post in the graph)",
            RuntimeSetup("openvino", "uint8", precision="bf16"),
            "bfloat16",
        ),
        _runtime(
            "openvino-fp16",
            "OpenVINO CPU, FP16 inference precision (CPUs with AVX512_FP16 or AMX-FP16)",
            RuntimeSetup("openvino", precision="fp16"),
            "float16",
        ),
        _runtime(
            "onnxruntime-cuda",
            "ONNX Runtime CUDA execution provider, float export",
            RuntimeSetup("onnxruntime", provider=CUDA),
        ),
        _runtime(
            "onnxruntime-trt",
            "ONNX Runtime TensorRT execution provider as the runtime sets it up (FP32, engine cache), float export",
            RuntimeSetup("onnxruntime", provider=TRT),
        ),
        _runtime("tensorrt", "native TensorRT engine (--engine)", RuntimeSetup("tensorrt"), "float16"),
        _runtime(
            "onnxruntime-rt",
            "ONNX Runtime CPU, float export of clip-lit-rt, the distilled student (its fidelity against the teacher "
            "is measured on real photos in README.md; the check frame here is noise)",
            RuntimeSetup("onnxruntime", provider=CPU, weights=STUDENT_WEIGHTS),
        ),
        _runtime(
            "onnxruntime-rt-uint8",
            "ONNX Runtime CPU, uint8 export of clip-lit-rt",
            RuntimeSetup("onnxruntime", "uint8", provider=CPU, weights=STUDENT_WEIGHTS),
        ),
    )
}

BASELINE = "torch"
#: the runtime backends ``--scale`` modes are measured on (the float-I/O ones: scaling needs the light map)
SCALE_BASES: tuple[str, ...] = (
    "onnxruntime",
    "openvino",
    "openvino-bf16",
    "onnxruntime-cuda",
    "onnxruntime-trt",
    "tensorrt",
    "onnxruntime-rt",
)


def scaled_entries(names: list[str], scales: list[float], upsample: str) -> list[BackendEntry]:
    """``--scale`` modes of the requested runtime backends: ``onnxruntime@scale0.5`` and so on."""
    entries = []
    for base_name in (name for name in SCALE_BASES if name in names):
        base = BACKENDS[base_name]
        for scale in scales:
            entries.append(
                BackendEntry(
                    f"{base_name}@scale{scale:g}",
                    f"{base.description}; runtime Enhancer, --scale {scale:g}, {upsample} light-map upsampling",
                    _scaled(base, scale, upsample),
                    base.precision,
                    base.runs_on,
                    base.runtime,
                )
            )
    return entries


def _scaled(base: BackendEntry, scale: float, upsample: str) -> Callable[[BenchContext], Backend]:
    def build(context: BenchContext) -> Backend:
        from cliplit.benchmarks.scaled import ScaledBackend

        return ScaledBackend(base.build(context), f"{base.name}@scale{scale:g}", scale, upsample)

    return build
