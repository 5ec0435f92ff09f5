"""The OpenVINO backend: the exported ONNX model on Intel's CPU inference engine, in FP32, bf16 or FP16.

OpenVINO reads the ``.onnx`` file itself (no conversion step for users) and compiles it for the device; with
``cache`` the compiled model is kept under ``$CLIPLIT_HOME/openvino-cache`` so later runs skip the compilation.
On 2-core CPUs it ran the float export 1.02–1.57× as fast as ONNX Runtime in FP32, and 2.6× (AVX512_BF16, AMD
EPYC) to 4.8–5.4× (AMX, Intel Xeon) as fast with its bf16 inference precision, which reproduced the six official
outputs at 56.2–58.2 dB (the bar is 50 dB: below half an 8-bit level RMS; docs/benchmarks.md). So when
``precision`` is not given, bf16 is chosen on CPUs that have native bf16 arithmetic (AVX512_BF16 or AMX) and FP32
elsewhere (bf16 emulated in FP32 units would be slower than FP32); ``describe()`` says which and why. A precision
the device cannot run natively is refused rather than silently run as FP32.

Frames are overlapped with a small pool of inference requests: ``submit`` starts one with ``start_async`` and
returns, ``wait`` blocks on it and copies its outputs out (the request is then reused). Like every backend module,
this one imports ``openvino`` only when a backend is created, so its options can be built without it.
"""

from __future__ import annotations

import itertools
import os
import queue
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cliplit.core.contract import IO_VARIANTS, META_IO, META_OUTPUTS, META_TEACHER, io_spec, outputs_from_metadata
from cliplit.core.errors import CliplitError
from cliplit.core.weights import cliplit_home
from cliplit.runtime.backends.base import Backend, BackendOptions, CoefficientsRunner, Unsupported

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
#: OpenVINO's element type names for ``INFERENCE_PRECISION_HINT``
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
#: what OpenVINO's ``OPTIMIZATION_CAPABILITIES`` lists when the device runs a precision natively
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}
#: /proc/cpuinfo flags of native bf16 arithmetic (dot products in bf16, not only conversions)
NATIVE_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
#: what each reduced precision needs, for error messages
_NEEDS = {"bf16": "AVX512_BF16 or AMX", "fp16": "AVX512_FP16 or AMX-FP16"}
#: bf16 against the official outputs of the six reference photos (OpenVINO 2026.4, float and uint8 I/O), and the bar
BF16_MEASURED_DB = (56.2, 58.2)
FIDELITY_BAR_DB = 50.0
#: a student's fast path (clip-lit-rt) in bf16 against FP32 on the nine held-out photos, estimated with PyTorch's CPU
#: autocast where no bf16 CPU was at hand (``python -m cliplit.benchmarks.bf16_estimate``; docs/distill.md)
STUDENT_BF16_ESTIMATED_DB = (59.7, 60.3)
INSTALL_HINT = "pip install 'cliplit[openvino]'"


@dataclass(frozen=True)
class OpenVinoOptions(BackendOptions):
    """``threads``: inference threads (default: OpenVINO's choice, one per core); ``precision``: "fp32", "bf16" or
    "fp16" (default: bf16 where the CPU has native bf16, else fp32); ``device_name``: OpenVINO device ("CPU",
    "GPU", ...; named so because ``--device`` is the GPU index of the CUDA backends); ``cache``: keep compiled models
    under ``$CLIPLIT_HOME/openvino-cache``."""

    backend = "openvino"
    unsupported: ClassVar[dict[str, Unsupported]] = {
        "device": Unsupported(
            "OpenVINO runs on the device it is given by name (OpenVinoOptions.device_name, CPU by default); --device "
            "is the GPU index of TensorRT, CUDA and torch"
        )
    }
    threads: int | None = None
    precision: str | None = None
    device_name: str = "CPU"
    cache: bool = True

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise CliplitError(f"--threads must be at least 1, got {self.threads}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise CliplitError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if not self.device_name:
            raise CliplitError("the OpenVINO device name is empty; use CPU (the default), GPU, ...")


@dataclass(frozen=True)
class PrecisionChoice:
    """The inference precision a backend runs in, and why (shown by ``describe()``)."""

    precision: str
    reason: str


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is no such file, e.g. not Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def choose_precision(
    requested: str | None,
    device: str,
    capabilities: Collection[str],
    flags: Collection[str] | None,
    *,
    student: bool = False,
) -> PrecisionChoice:
    """The precision to run: ``requested`` if the device runs it natively (else a clear error), or the policy's
    choice: bf16 on a CPU with native bf16 — OpenVINO lists BF16 and, where /proc/cpuinfo is readable, the CPU has
    AVX512_BF16 or AMX — because it is the fastest mode whose measured fidelity holds; FP32 otherwise.
    ``capabilities`` is the device's ``OPTIMIZATION_CAPABILITIES``, ``flags`` the CPU's flags (None: unknown);
    ``student``: the model is a distilled student, whose bf16 evidence the reason cites instead of the teacher's."""
    if requested == "fp32":
        return PrecisionChoice("fp32", "requested with --precision fp32")
    if requested is not None:
        if _CAPABILITY[requested] not in capabilities:
            raise CliplitError(
                f"--precision {requested}: OpenVINO's {device} device does not run {requested} natively (it reports "
                f"{', '.join(capabilities) or 'no capabilities'}; on a CPU {requested} needs {_NEEDS[requested]}). "
                "Use --precision fp32, or leave --precision out to let cliplit choose"
            )
        return PrecisionChoice(requested, f"requested with --precision {requested}")
    if device.split(".", 1)[0].upper() != "CPU":
        return PrecisionChoice("fp32", f"bf16 is chosen automatically only on CPUs, not {device}")
    native = sorted(set(NATIVE_BF16_FLAGS) & set(flags)) if flags is not None else []
    if "BF16" in capabilities and (flags is None or native):
        if student:
            low, high = STUDENT_BF16_ESTIMATED_DB
            evidence = f"kept a student's fast-path frames within {low:g}–{high:g} dB of FP32 (estimated)"
        else:
            low, high = BF16_MEASURED_DB
            evidence = f"reproduced the official outputs at {low:g}–{high:g} dB"
        return PrecisionChoice(
            "bf16",
            f"the CPU has native bf16 ({', '.join(native) if native else 'OpenVINO reports BF16'}) and bf16 {evidence} "
            f"(bar {FIDELITY_BAR_DB:g} dB); --precision fp32 forces FP32",
        )
    return PrecisionChoice("fp32", f"no native bf16 on this CPU (needs {_NEEDS['bf16']})")


@dataclass
class _Slot:
    """One inference request; ``ticket`` names the frame it holds (None when free), ``batch`` keeps that frame's
    input alive while OpenVINO reads it in place."""

    request: Any
    ticket: int | None = None
    batch: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Handle:
    """A submitted batch; pass it to ``OpenVinoBackend.wait`` once."""

    slot: int
    ticket: int


class OpenVinoBackend(Backend):
    """An exported cliplit model (either I/O variant) compiled by OpenVINO. Use one backend from one thread."""

    name = "openvino"

    def __init__(self, model_path: str | os.PathLike[str], options: OpenVinoOptions | None = None) -> None:
        options = options or OpenVinoOptions()
        try:
            import openvino as ov
        except ImportError as error:
            raise CliplitError(
                f"the openvino backend needs OpenVINO ({error}); install it with {INSTALL_HINT}"
            ) from error
        path = Path(model_path)
        if not path.is_file():
            raise CliplitError(f"{path}: no such ONNX model")
        core = ov.Core()
        device = options.device_name
        if device.split(".", 1)[0] not in {name.split(".", 1)[0] for name in core.available_devices}:
            raise CliplitError(f"OpenVINO has no device {device!r} here; it has {', '.join(core.available_devices)}")
        try:
            model = core.read_model(str(path))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses with the parser's message
            raise CliplitError(f"{path}: OpenVINO cannot read this model ({_message(error)})") from error
        self.metadata = _metadata(model)
        capabilities = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
        student = META_TEACHER in self.metadata  # a distilled student's export names its teacher
        self.choice = choose_precision(options.precision, device, capabilities, cpu_flags(), student=student)
        io = _io_of(self.metadata, path)
        try:
            recorded = outputs_from_metadata(io, self.metadata)
        except CliplitError as error:
            raise CliplitError(f"{path} says io={io} but its '{META_OUTPUTS}' metadata does not fit: {error}") from None
        super().__init__(io, recorded)  # a single-output export (--outputs enhanced) has only its recorded outputs
        self.model_path = path
        spec = io_spec(io, recorded)
        self._check_contract(model, spec.input_name, spec.output_names, path)
        if options.cache:
            core.set_property({"CACHE_DIR": str(cliplit_home() / "openvino-cache")})
        self._core, self.device = core, device
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _HINTS[self.choice.precision],
            "PERFORMANCE_HINT": "LATENCY",  # one frame as fast as possible, all cores on it
        }
        if options.threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = options.threads
        self.compiled = self._compile(model, path)
        self.device_full_name = str(core.get_property(device, "FULL_DEVICE_NAME"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or None
        self.version = ov.get_version()
        self._input_name = spec.input_name
        self._input_dtype, self._input_layout = np.dtype(spec.input_dtype), spec.input_layout
        self._outputs = {name: self.compiled.output(name) for name in spec.output_names}
        self._slots: list[_Slot] = []
        self._tickets = itertools.count()

    def _compile(self, model: Any, path: Path) -> Any:
        """``model`` compiled for the device in the chosen precision, or a clear error."""
        try:
            compiled = self._core.compile_model(model, self.device, self._config)
        except Exception as error:  # an operator the device lacks, or out of memory
            raise CliplitError(
                f"{path}: OpenVINO cannot compile this model for {self.device} ({_message(error)})"
            ) from error
        actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if actual != _HINTS[self.choice.precision]:
            raise CliplitError(
                f"OpenVINO compiled the model for {self.device} in {actual}, not {self.choice.precision} as asked; "
                "use --precision fp32"
            )
        return compiled

    @property
    def precision(self) -> str:
        return self.choice.precision

    def open_coefficients(self) -> CoefficientsRunner | None:
        """A student's coefficients graph compiled with this model's device, precision and threads, on CPU devices
        only (the fast path's OpenCV passes run on the CPU; on a GPU device the whole model runs there). In FP32 it
        took 21.8 against ONNX Runtime's 28.0 CPU-ms per 720p frame on one thread of the 2-core AMD EPYC (Zen 3);
        bf16, where the CPU has it natively, kept the enhanced frames within 2 levels of FP32 (docs/distill.md)."""
        from cliplit.runtime.models import fast_path_coefficients  # ONNX, loaded only when a model is

        if self.device.split(".", 1)[0] != "CPU":
            return None
        path = fast_path_coefficients(self.model_path, self.io, self.metadata)
        if path is None:
            return None
        try:
            model = self._core.read_model(str(path))
        except Exception as error:  # a damaged cache file
            raise CliplitError(f"{path}: OpenVINO cannot read this model ({_message(error)})") from error
        return _RequestPool(self._compile(model, path))

    def describe(self) -> str:
        threads = f", {self.threads} threads" if self.threads else ""
        device = f"{self.device}: {self.device_full_name}{threads}"
        return f"{self.name} ({device}; {self.precision.upper()}: {self.choice.reason})"

    def details(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "precision_reason": self.choice.reason,
            "device": self.device,
            "threads": self.threads,
            "openvino": self.version,
        }

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.wait(self.submit(batch))

    def submit(self, batch: np.ndarray) -> Handle:
        """Start inference on ``batch`` (contract input layout) and return at once. A request is created when all
        are busy, so the pool grows to the number of frames the caller keeps in flight (two in the pipeline)."""
        if batch.ndim != 4 or batch.dtype != self._input_dtype:
            raise CliplitError(
                f"the {self.io} model takes a 4-D {self._input_dtype} batch ({self._input_layout}), got "
                f"{batch.dtype} of shape {batch.shape}"
            )
        batch = np.ascontiguousarray(batch)
        index = next((i for i, slot in enumerate(self._slots) if slot.ticket is None), None)
        if index is None:
            self._slots.append(_Slot(self.compiled.create_infer_request()))
            index = len(self._slots) - 1
        slot = self._slots[index]
        ticket = next(self._tickets)
        try:
            slot.request.start_async({self._input_name: batch}, share_inputs=True)
        except Exception as error:  # a wrong dtype or rank: OpenVINO's message, on one line
            raise CliplitError(f"OpenVINO rejected a batch of shape {batch.shape}: {_message(error)}") from error
        slot.ticket, slot.batch = ticket, batch
        return Handle(index, ticket)

    def wait(self, handle: object) -> dict[str, np.ndarray]:
        """Block until the batch of ``handle`` is done and return copies of its outputs by contract name."""
        if not isinstance(handle, Handle) or handle.slot >= len(self._slots):
            raise TypeError(f"{type(self).__name__}.wait() got {type(handle).__name__}, not one of its handles")
        slot = self._slots[handle.slot]
        if slot.ticket != handle.ticket:
            raise CliplitError("this batch's results were already collected (each handle can be waited on once)")
        try:
            try:
                slot.request.wait()
            except RuntimeError as error:  # shape inference runs here: e.g. a pooling kernel larger than a tiny frame
                shape = None if slot.batch is None else slot.batch.shape
                raise CliplitError(
                    f"OpenVINO could not run a batch of shape {shape}: {_message(error)} (ONNX Runtime runs every "
                    "size the contract allows: --backend onnxruntime)"
                ) from error
            return {name: slot.request.get_tensor(port).data.copy() for name, port in self._outputs.items()}
        finally:
            slot.ticket, slot.batch = None, None

    def close(self) -> None:
        """Finish what is in flight and free the requests and the compiled model."""
        for slot in self._slots:
            if slot.ticket is not None:
                slot.request.wait()
        self._slots = []
        self.compiled = None

    def _check_contract(self, model: Any, input_name: str, output_names: tuple[str, ...], path: Path) -> None:
        inputs = [port.get_any_name() for port in model.inputs]
        outputs = {name for port in model.outputs for name in port.get_names()}
        if inputs != [input_name] or not set(output_names) <= outputs:
            raise CliplitError(
                f"{path} says io={self.io} but has inputs {inputs} and outputs {sorted(outputs)}; expected input "
                f"{input_name!r} and outputs {list(output_names)}"
            )


class _RequestPool:
    """A compiled model called from several threads: each call takes a free inference request (a new one when all
    are busy, so the pool grows to the number of callers) and gives it back when its output is copied out."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            request = self._free.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            request.infer({0: batch})
            return request.get_output_tensor(0).data.copy()
        except RuntimeError as error:  # shape inference fails here, e.g. on a frame the network cannot pool
            raise CliplitError(
                f"OpenVINO could not run the student's coefficients on a batch of shape {batch.shape}: "
                f"{_message(error)} (ONNX Runtime runs every size the contract allows: --backend onnxruntime)"
            ) from error
        finally:
            self._free.put(request)


def _metadata(model: Any) -> dict[str, str]:
    """The ONNX ``metadata_props``, which OpenVINO's ONNX reader keeps under the model's ``framework`` rt_info."""
    if not model.has_rt_info(["framework"]):
        return {}
    return {key: value.astype(str) for key, value in model.get_rt_info(["framework"]).astype(dict).items()}


def _io_of(metadata: dict[str, str], path: Path) -> str:
    io = metadata.get(META_IO)
    if io not in IO_VARIANTS:
        raise CliplitError(
            f"{path} has no valid '{META_IO}' metadata ({io!r}): it was not exported by cliplit. Export it with "
            "`export-engine --onnx` so the runtime knows its input layout"
        )
    return io


def _message(error: BaseException) -> str:
    """OpenVINO's own message: its errors start with where they were raised ("Exception from src/...",
    "Check '...' failed at ...") and end with what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
