"""Native TensorRT inference: an engine built by export-engine, run with cuda-python, frames overlapped on streams.

Each in-flight frame owns an execution context, a CUDA stream and its buffers (page-locked host memory, device
memory), so while one frame's results are copied back and post-processed the next one is already computing:
``submit(batch)`` enqueues upload, inference and download and returns at once; ``wait(handle)`` returns the outputs.
Buffers are reallocated only when a frame needs more memory than its slot holds, so a stream of equal frames
allocates once. Before the engine is deserialized its sidecar is checked against the running TensorRT and GPU, and
every frame is checked against the engine's optimization profile: both fail with a message saying what to rebuild
rather than with TensorRT's opaque errors. Runs with the full ``tensorrt`` package, or for version-compatible engines
with only ``tensorrt_dispatch`` or ``tensorrt_lean`` (``cliplit.core.tensorrt`` says which runs what).

The CUDA device is current per host thread, and the pipeline calls ``submit``/``wait`` from its inference thread,
not the thread that built the backend: every entry point makes the backend's GPU current first (``cudaSetDevice`` is
cheap), so ``device=1`` really runs on GPU 1 whichever thread calls.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from cliplit.core.contract import IO_SPECS, io_spec
from cliplit.core.cuda import CudaRuntime, host_array
from cliplit.core.errors import CliplitError
from cliplit.core.shapes import ProfileShapes, format_shape
from cliplit.core.sidecar import EngineSidecar, check_compatible, read_sidecar
from cliplit.core.tensorrt import import_tensorrt
from cliplit.core.tensorrt_engine import deserialize_engine, numpy_dtype
from cliplit.runtime.backends.base import Backend, BackendOptions, Unsupported

DEFAULT_IN_FLIGHT = 2


@dataclass(frozen=True)
class TensorRTOptions(BackendOptions):
    """``device``: GPU index; ``in_flight``: frames running at once (one execution context and CUDA stream each);
    ``sidecar``: the engine's sidecar (default: read ``<engine>.json``)."""

    backend = "tensorrt"
    unsupported: ClassVar[dict[str, Unsupported]] = {
        "threads": Unsupported("an engine runs on the GPU; --threads sets the CPU threads of the other backends"),
        "precision": Unsupported(
            "an engine runs in the precision it was built with (export-engine builds FP16, or FP32 with --no-fp16)"
        ),
    }
    device: int = 0
    in_flight: int = DEFAULT_IN_FLIGHT
    sidecar: EngineSidecar | None = None

    def __post_init__(self) -> None:
        if self.in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        if self.device < 0:
            raise ValueError("device must be a GPU index (0 or more)")


@dataclass
class _Buffer:
    """One tensor's device memory and its page-locked host mirror, ``capacity`` bytes each."""

    device: int
    host: int
    capacity: int


@dataclass
class _Slot:
    """Everything one in-flight frame uses; ``ticket`` identifies the frame it holds (None when free)."""

    context: Any
    stream: Any
    buffers: dict[str, _Buffer] = field(default_factory=dict)
    ticket: int | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Handle:
    """A submitted frame; pass it to ``TensorRTBackend.wait``."""

    slot: int
    ticket: int


class TensorRTBackend(Backend):
    """A TensorRT engine on one GPU, running up to ``in_flight`` frames at once (one CUDA stream each).

    An engine without sidecar (e.g. from trtexec) runs unchecked, its I/O variant taken from its input name. Use
    one backend from one thread.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike[str], options: TensorRTOptions | None = None) -> None:
        options = options or TensorRTOptions()
        path = Path(engine_path)
        if not path.is_file():
            raise CliplitError(f"{path}: no such engine file; build one with export-engine --engine {path}")
        trt = import_tensorrt()
        self.sidecar = options.sidecar if options.sidecar is not None else read_sidecar(path)
        self.cuda = CudaRuntime()
        self.gpu = self.cuda.gpu(options.device)
        if self.sidecar is not None:
            check_compatible(
                self.sidecar,
                engine=str(path),
                tensorrt_version=trt.__version__,
                tensorrt_module=trt.__name__,
                gpu_name=self.gpu.name,
                compute_capability=self.gpu.compute_capability,
            )
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime, self._engine = self._deserialize(path)  # the engine must not outlive its runtime
        engine = self._engine
        self.input_name, self.output_names = self._io_names(trt, engine, path)
        super().__init__(self.sidecar.io if self.sidecar is not None else _io_from_input(self.input_name, path))
        self.dtypes = {name: numpy_dtype(trt, engine.get_tensor_dtype(name)) for name in self._tensor_names}
        self._check_contract(path)
        self.output_names = list(io_spec(self.io).output_names)  # the contract's order, whatever the engine's
        low, opt, high = (tuple(dims) for dims in engine.get_tensor_profile_shape(self.input_name, 0))
        self.profile = ProfileShapes(io=self.io, min=low, opt=opt, max=high)
        self._tickets = itertools.count()
        self._slots: list[_Slot] = []
        try:
            for _ in range(options.in_flight):  # each context holds activation memory for the profile's largest input
                context = engine.create_execution_context()
                if context is None:
                    raise CliplitError(f"TensorRT could not create an execution context for {path} (GPU memory?)")
                self._slots.append(_Slot(context=context, stream=self.cuda.stream_create()))
        except BaseException:
            self.close()
            raise

    def _deserialize(self, path: Path) -> tuple[Any, Any]:
        """(runtime, engine) for the engine file. A version-compatible plan may run the lean runtime it embeds: the
        sidecar says export-engine built it, so it is trusted like the rest of the model."""
        hint = "rebuild the engine with export-engine on this machine"
        if self.sidecar is None:
            hint += " (without its sidecar an engine loads as a plain one; a version-compatible one needs it)"
        host_code = self.sidecar is not None and self.sidecar.version_compatible
        return deserialize_engine(self._trt, self._logger, path, host_code=host_code, hint=hint)

    def describe(self) -> str:
        precision = self.sidecar.precision.upper() if self.sidecar is not None else "unknown precision"
        return f"{self.name} ({self.gpu.name}, {precision}, {len(self._slots)} frames in flight)"

    def details(self) -> dict[str, Any]:
        return {"precision": self.sidecar.precision} if self.sidecar is not None else {}

    @property
    def max_in_flight(self) -> int:
        """Frames that may be submitted and not yet waited for: one per execution context and stream."""
        return len(self._slots)

    @property
    def _tensor_names(self) -> list[str]:
        return [self.input_name, *self.output_names]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.wait(self.submit(batch))

    def submit(self, batch: np.ndarray) -> Handle:
        """Enqueue ``batch`` (contract input layout) on a free stream; returns at once."""
        batch = self._check_batch(batch)
        index, slot = self._free_slot()
        self.cuda.set_device(self.gpu.index)  # the calling thread may not be the one that built the backend
        context = slot.context
        if not context.set_input_shape(self.input_name, batch.shape):
            raise CliplitError(f"TensorRT rejected input shape {format_shape(batch.shape)} ({self.profile.describe()})")
        shapes = {self.input_name: batch.shape}
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(dim < 0 for dim in shape):
                raise CliplitError(f"TensorRT could not infer the shape of output {name!r} (got {shape})")
            shapes[name] = shape
        for name, shape in shapes.items():
            buffer = self._buffer(slot, name, int(np.prod(shape)) * self.dtypes[name].itemsize)
            if not context.set_tensor_address(name, buffer.device):
                raise CliplitError(f"TensorRT rejected the device address of tensor {name!r}")
        upload = slot.buffers[self.input_name]
        _host_view(upload, batch.shape, batch.dtype)[...] = batch
        self.cuda.copy_to_device(upload.device, upload.host, batch.nbytes, slot.stream)
        if not context.execute_async_v3(int(slot.stream)):
            raise CliplitError("TensorRT failed to enqueue inference (its log above says why)")
        for name in self.output_names:
            download = slot.buffers[name]
            nbytes = int(np.prod(shapes[name])) * self.dtypes[name].itemsize
            self.cuda.copy_to_host(download.host, download.device, nbytes, slot.stream)
        slot.ticket, slot.shapes = next(self._tickets), shapes  # a failed enqueue leaves the slot free
        return Handle(slot=index, ticket=slot.ticket)

    def wait(self, handle: Handle) -> dict[str, np.ndarray]:
        """Block until the frame of ``handle`` is done and return its outputs by contract name.

        The slot is free again afterwards even when CUDA reports an error, so one failed frame does not use up the
        backend (a sticky CUDA error still fails the next call, with its own message).
        """
        slot = self._slots[handle.slot]
        if slot.ticket != handle.ticket:
            raise CliplitError("this frame's results were already collected (each handle can be waited on once)")
        try:
            self.cuda.set_device(self.gpu.index)
            self.cuda.stream_synchronize(slot.stream)  # results exist in host memory only after this
            return {
                name: _host_view(slot.buffers[name], slot.shapes[name], self.dtypes[name]).copy()
                for name in self.output_names
            }
        finally:
            slot.ticket = None

    def close(self) -> None:
        """Finish queued work and free streams and memory; the backend cannot run afterwards.

        Every resource is released even when some release fails; the first CUDA error is raised at the end.
        """
        errors: list[CliplitError] = []
        slots, self._slots = getattr(self, "_slots", []), []
        if slots:
            _attempt(errors, self.cuda.set_device, self.gpu.index)
        for slot in slots:
            _attempt(errors, self.cuda.stream_synchronize, slot.stream)
            for buffer in slot.buffers.values():
                _attempt(errors, self.cuda.free, buffer.device)
                _attempt(errors, self.cuda.free_host, buffer.host)
            slot.buffers.clear()
            _attempt(errors, self.cuda.stream_destroy, slot.stream)
            slot.context = None
        self._engine = None
        self._runtime = None
        if errors:
            raise errors[0]

    def _io_names(self, trt: ModuleType, engine: Any, path: Path) -> tuple[str, list[str]]:
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise CliplitError(f"{path} has inputs {inputs}; a CLIP-LIT engine has exactly one")
        return inputs[0], [name for name in names if name not in inputs]

    def _check_contract(self, path: Path) -> None:
        spec = io_spec(self.io)
        expected_dtype = np.dtype(spec.input_dtype)
        if self.input_name != spec.input_name or set(self.output_names) != set(spec.output_names):
            raise CliplitError(
                f"{path} has input {self.input_name!r} and outputs {self.output_names}; the {self.io} contract needs "
                f"{spec.input_name!r} and {list(spec.output_names)}"
            )
        if self.dtypes[self.input_name] != expected_dtype:
            raise CliplitError(
                f"{path} takes {self.dtypes[self.input_name]} input; the {self.io} contract needs {expected_dtype}"
            )

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        spec = io_spec(self.io)
        batch = np.asarray(batch)
        if batch.dtype != self.dtypes[self.input_name] or batch.ndim != 4:
            raise CliplitError(
                f"the {self.io} engine takes {spec.input_dtype} batches of shape {spec.input_layout}; got "
                f"{batch.dtype} of shape {format_shape(batch.shape)}"
            )
        if not self.profile.contains(batch.shape):
            raise CliplitError(
                f"input {format_shape(batch.shape)} is outside the engine's optimization profile "
                f"({self.profile.describe()}); resize the frames or rebuild the engine with export-engine "
                "--min-shape/--max-shape covering this size"
            )
        return np.ascontiguousarray(batch)

    def _free_slot(self) -> tuple[int, _Slot]:
        for index, slot in enumerate(self._slots):
            if slot.ticket is None:
                return index, slot
        raise CliplitError(f"{len(self._slots)} frames are already in flight; wait() for one before submitting another")

    def _buffer(self, slot: _Slot, name: str, nbytes: int) -> _Buffer:
        """The slot's buffer for tensor ``name``, reallocated only when it is smaller than ``nbytes``."""
        buffer = slot.buffers.get(name)
        if buffer is not None and buffer.capacity >= nbytes:
            return buffer
        if buffer is not None:
            del slot.buffers[name]
            self.cuda.free(buffer.device)
            self.cuda.free_host(buffer.host)
        device = self.cuda.malloc(nbytes)
        try:
            host = self.cuda.malloc_host(nbytes)
        except CliplitError:
            self.cuda.free(device)
            raise
        slot.buffers[name] = _Buffer(device=device, host=host, capacity=nbytes)
        return slot.buffers[name]


def _attempt(errors: list[CliplitError], release: Callable[..., None], *args: Any) -> None:
    """Run one release step of ``close``, recording a failure instead of stopping at it."""
    try:
        release(*args)
    except CliplitError as error:
        errors.append(error)


def _host_view(buffer: _Buffer, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return host_array(buffer.host, nbytes).view(dtype).reshape(shape)


def _io_from_input(input_name: str, path: Path) -> str:
    """The contract variant of an engine without sidecar, from its input tensor's name."""
    for io, spec in IO_SPECS.items():
        if spec.input_name == input_name:
            return io
    names = " or ".join(repr(spec.input_name) for spec in IO_SPECS.values())
    raise CliplitError(f"{path} has no sidecar and its input {input_name!r} is neither {names}: not a cliplit engine")
