"""Every backend ``cliplit bench`` knows, what it needs, and how to load it from the runtime's own code.

The benchmark measures what users deploy, so it loads backends exactly as the runtime does (``OnnxRuntimeBackend``,
``OpenVinoBackend``, ``TensorRTBackend`` through ``open_backend``, ``TorchBackend``) and adds only the PyTorch
variants that exist for comparison (``cliplit.benchmarks.variants``). Each entry can say why it cannot run on this
machine; the suite records that reason and goes on with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cliplit.core.weights import cliplit_home
from cliplit.runtime.backends.base import Backend


class BackendUnavailable(Exception):
    """A backend cannot run here (no GPU, provider or engine missing); the message says why."""


@dataclass
class BenchContext:
    """What backends are built from: the weights, an optional engine, the devices and thread count."""

    weights: str
    device: str  # "cpu" or "cuda": where PyTorch variants run
    engine: Path | None = None
    threads: int | None = None
    gpu_index: int = 0

    def onnx(self, io: str) -> Path:
        """The dynamic-shape ONNX export of the weights in I/O variant ``io``: the runtime's cached export, made
        (and verified against PyTorch) on first use, so ONNX Runtime runs exactly what ``cliplit enhance`` runs."""
        from cliplit.runtime.models import ensure_onnx

        return ensure_onnx(self.weights, io)


@dataclass(frozen=True)
class BackendEntry:
    """One benchmarkable backend: how to build it and what hardware/precision its numbers mean."""

    name: str
    description: str
    build: Callable[[BenchContext], Backend]
    precision: str = "float32"  # the arithmetic it mostly runs in ("bfloat16", ...): picks the peak it is compared with
    gpu: bool = False  # runs its arithmetic on the GPU
    engine: str | None = None  # "openvino": its reduced-precision peak is measured through that engine
    weights: str | None = None  # the weights it runs whatever --weights says (the student's entries)

    def peak_device(self, context: BenchContext) -> str:
        return "cuda" if self.gpu or (self.name.startswith("torch") and context.device == "cuda") else "cpu"


def _torch_variant(name: str) -> Callable[[BenchContext], Backend]:
    def build(context: BenchContext) -> Backend:
        from cliplit.benchmarks.variants import TorchVariant, unavailable_reason

        reason = unavailable_reason(name, context.device)
        if reason is not None:
            raise BackendUnavailable(reason)
        return TorchVariant(context.weights, name, context.device, threads=context.threads)

    return build


def _torch_baseline(context: BenchContext) -> Backend:
    from cliplit.runtime.backends.torch import TorchBackend, TorchOptions

    options = TorchOptions(device=context.gpu_index, cpu_only=context.device == "cpu", threads=context.threads)
    return TorchBackend(context.weights, options)


def _onnxruntime(io: str, provider: str | None) -> Callable[[BenchContext], Backend]:
    """ONNX Runtime on one execution provider; GPU providers must really be the session's first, not a fallback."""

    def build(context: BenchContext) -> Backend:
        import onnxruntime as ort

        from cliplit.runtime.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions

        providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
        if provider is not None:
            if provider not in ort.get_available_providers():
                raise BackendUnavailable(
                    f"this onnxruntime build has no {provider} "
                    "(install onnxruntime-gpu and the CUDA/TensorRT libraries)"
                )
            providers.insert(0, (provider, _provider_options(provider, context)))
        options = OnnxRuntimeOptions(threads=context.threads, providers=tuple(providers))
        backend = OnnxRuntimeBackend(context.onnx(io), options)
        if provider is not None and backend.providers[0] != provider:
            raise BackendUnavailable(f"{provider} failed to initialise; ONNX Runtime fell back to {backend.providers}")
        return backend

    return build


def _provider_options(provider: str, context: BenchContext) -> dict[str, str]:
    options = {"device_id": str(context.gpu_index)}
    if provider == "TensorrtExecutionProvider":
        # FP16 as the native engines use it; the engine cache keeps rebuilds out of repeated runs
        options.update(
            {
                "trt_fp16_enable": "True",
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cliplit_home() / "ort-tensorrt-cache"),
            }
        )
    return options


STUDENT_WEIGHTS = "clip-lit-rt"


def _student(io: str) -> Callable[[BenchContext], Backend]:
    """ONNX Runtime CPU on the distilled real-time student, whatever --weights names, so it runs beside the teacher."""
    build = _onnxruntime(io, None)
    return lambda context: build(replace(context, weights=STUDENT_WEIGHTS))


def _openvino(io: str, precision: str) -> Callable[[BenchContext], Backend]:
    """OpenVINO on the CPU in one fixed precision (what ``--backend openvino --precision P`` runs); a precision this
    CPU cannot compute natively makes the entry unavailable, with OpenVINO's reason, instead of an FP32 stand-in."""

    def build(context: BenchContext) -> Backend:
        from cliplit.core.errors import CliplitError
        from cliplit.runtime.backends import installed
        from cliplit.runtime.backends.openvino import INSTALL_HINT, OpenVinoBackend, OpenVinoOptions

        if not installed("openvino"):
            raise BackendUnavailable(f"OpenVINO is not installed ({INSTALL_HINT})")
        try:
            return OpenVinoBackend(context.onnx(io), OpenVinoOptions(threads=context.threads, precision=precision))
        except CliplitError as error:
            raise BackendUnavailable(str(error)) from error

    return build


def _tensorrt(context: BenchContext) -> Backend:
    if context.engine is None:
        raise BackendUnavailable("no engine given: pass --engine model.engine (build one with export-engine --engine)")
    if not Path(context.engine).is_file():
        raise BackendUnavailable(f"engine {context.engine} does not exist")
    from cliplit.runtime.backends.tensorrt import TensorRTBackend, TensorRTOptions

    return TensorRTBackend(context.engine, TensorRTOptions(device=context.gpu_index))


BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        BackendEntry("torch", "PyTorch eager FP32 (the official inference; the baseline)", _torch_baseline),
        BackendEntry("torch-channels-last", "PyTorch eager FP32, channels_last", _torch_variant("torch-channels-last")),
        BackendEntry("torch-fp16", "PyTorch eager, FP16 autocast", _torch_variant("torch-fp16"), precision="float16"),
        BackendEntry("torch-compile", "torch.compile (Inductor) FP32, static shapes", _torch_variant("torch-compile")),
        BackendEntry(
            "torch-fp16-cudagraphs",
            "torch.compile reduce-overhead (CUDA graphs), FP16 autocast",
            _torch_variant("torch-fp16-cudagraphs"),
            precision="float16",
        ),
        BackendEntry("onnxruntime", "ONNX Runtime CPU, float export (dynamic shapes)", _onnxruntime("float", None)),
        BackendEntry(
            "onnxruntime-uint8",
            "ONNX Runtime CPU, uint8 export (BGR frames in/out, pre/post in the graph)",
            _onnxruntime("uint8", None),
        ),
        BackendEntry(
            "openvino",
            "OpenVINO CPU, FP32, float export (--precision fp32)",
            _openvino("float", "fp32"),
            engine="openvino",
        ),
        BackendEntry(
            "openvino-bf16",
            "OpenVINO CPU, bf16 inference precision, float export (what auto picks on CPUs with AVX512_BF16 or AMX)",
            _openvino("float", "bf16"),
            precision="bfloat16",
            engine="openvino",
        ),
        BackendEntry(
            "openvino-bf16-uint8",
            "OpenVINO CPU, bf16, uint8 export (BGR frames in/out, pre/post in the graph)",
            _openvino("uint8", "bf16"),
            precision="bfloat16",
            engine="openvino",
        ),
        BackendEntry(
            "openvino-fp16",
            "OpenVINO CPU, FP16 inference precision (CPUs with AVX512_FP16 or AMX-FP16)",
            _openvino("float", "fp16"),
            precision="float16",
            engine="openvino",
        ),
        BackendEntry(
            "onnxruntime-cuda",
            "ONNX Runtime CUDA execution provider, float export",
            _onnxruntime("float", "CUDAExecutionProvider"),
            gpu=True,
        ),
        BackendEntry(
            "onnxruntime-trt",
            "ONNX Runtime TensorRT execution provider (FP16), float export",
            _onnxruntime("float", "TensorrtExecutionProvider"),
            precision="float16",
            gpu=True,
        ),
        BackendEntry("tensorrt", "native TensorRT engine (--engine)", _tensorrt, precision="float16", gpu=True),
        BackendEntry(
            "onnxruntime-rt",
            "ONNX Runtime CPU, float export of clip-lit-rt, the distilled student (its fidelity against the teacher "
            "is measured on real photos in README.md; the check frame here is noise)",
            _student("float"),
            weights=STUDENT_WEIGHTS,
        ),
        BackendEntry(
            "onnxruntime-rt-uint8",
            "ONNX Runtime CPU, uint8 export of clip-lit-rt",
            _student("uint8"),
            weights=STUDENT_WEIGHTS,
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
                    precision=base.precision,
                    gpu=base.gpu,
                    engine=base.engine,
                    weights=base.weights,
                )
            )
    return entries


def _scaled(base: BackendEntry, scale: float, upsample: str) -> Callable[[BenchContext], Backend]:
    def build(context: BenchContext) -> Backend:
        from cliplit.benchmarks.scaled import ScaledBackend

        return ScaledBackend(base.build(context), f"{base.name}@scale{scale:g}", scale, upsample)

    return build
