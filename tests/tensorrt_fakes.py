"""Fake ``tensorrt`` (10.x, 11.x, ``tensorrt_dispatch``, ``tensorrt_lean``) and cuda-python runtime modules.

They follow the documented Python APIs of TensorRT 10/11 and ``cuda.bindings.runtime`` closely enough for cliplit's
builder and runtime to run against them on a CPU machine, and they are as strict as the real ones where a lenient fake
would hide a bug:

* CUDA is asynchronous: ``cudaMemcpyAsync`` and ``execute_async_v3`` only enqueue work on their stream; it runs, in
  order, when the stream is synchronized (or destroyed, or memory is freed, which synchronizes like ``cudaFree``). A
  result read before ``cudaStreamSynchronize`` is the buffer's old content (fresh allocations hold 0xCD garbage).
* the current device is per thread, as in the CUDA runtime: a new thread starts on device 0; streams and memory
  belong to the device current when they were made, and enqueuing on a stream of another device fails with
  ``cudaErrorInvalidResourceHandle``; a TensorRT context only executes with its engine's device current;
* cuda-python built for a newer CUDA than the driver fails every call with ``cudaErrorInsufficientDriver``;
* the fake ONNX parser names layers as onnx-tensorrt does: a node's layers get the node's name made unique with a
  ``_<counter>`` suffix (weightUtils.cpp ``generateUniqueName``) and metadata ``[ONNX Layer: <node>]``
  (importerUtils.cpp ``processMetadata``); helper layers (constants, broadcast reshapes) get weight or
  ``ONNXTRT_*`` names and no metadata; and it rejects UINT8 tensors anywhere but on network I/O through a Cast;
* TensorRT 11's fake has no ``BuilderFlag.FP16`` (nor the other weak-typing flags);
* a version-compatible plan records whether it embeds the lean runtime; runtimes load it only with
  ``engine_host_code_allowed`` set, and each runtime module runs what ``cliplit.core.tensorrt`` documents.

A fake engine computes its outputs by running ONNX Runtime on the ONNX model it was built from (for TensorRT 11 FP16
that is the FP16 model), reading its input from and writing its outputs to the device addresses it was given, so the
data path and the parity measurement are checked end to end.

Also the shared fixtures of the TensorRT tests: the real exported models (made once per session).
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

SHARED = Path(__file__).parents[1].parent / "shared" / "clip-lit"
WEIGHTS = SHARED / "enhancement_model.pth"
PHOTO = SHARED / "input" / "30374039626_355dca2192_o.jpg"
GPU_NAME = "NVIDIA Fake GPU"
_EXPORTS: dict[str, Path] = {}


def exported_onnx(tmp_path_factory: pytest.TempPathFactory, io: str) -> Path:
    """The released weights exported (and verified) by ``export_onnx`` in variant ``io``, once per test session."""
    if io not in _EXPORTS:
        from cliplit.export.onnx_export import export_onnx
        from cliplit.train.checkpoint import load_enhancer

        assert WEIGHTS.is_file(), f"missing shared test data {WEIGHTS}"
        path = tmp_path_factory.mktemp("onnx") / f"clip-lit-{io}.onnx"
        export_onnx(load_enhancer(WEIGHTS), path, io=io)
        _EXPORTS[io] = path
    return _EXPORTS[io]


class CallLog(list):
    """Every call made on the fakes, in order, as (name, args) tuples."""

    def names(self) -> list[str]:
        return [name for name, _ in self]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for call, args in self if call == name]


# --------------------------------------------------------------------------------------------------- fake CUDA ---


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


@dataclass
class FakeStream:
    """A CUDA stream: the device it belongs to and the work enqueued on it, not yet run."""

    device: int
    pending: list[Callable[[], None]] = field(default_factory=list)


class FakeCudart(ModuleType):
    """``cuda.bindings.runtime`` on NumPy. ``fail`` maps a function name to the status it returns."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind

    def __init__(
        self,
        log: CallLog,
        *,
        gpu_name: str = GPU_NAME,
        compute_capability: tuple[int, int] = (8, 9),
        device_count: int = 1,
        driver_version: int = 12080,
        runtime_version: int = 12060,
        fail: dict[str, cudaError_t] | None = None,
    ) -> None:
        super().__init__("cuda.bindings.runtime")
        self.log = log
        self.gpu_name = gpu_name
        self.compute_capability = compute_capability
        self.device_count = device_count
        self.driver_version = driver_version
        self.runtime_version = runtime_version
        self.fail = dict(fail or {})
        self.memory: dict[int, tuple[str, int, np.ndarray]] = {}  # address -> (kind, device, backing buffer)
        self.streams: dict[int, FakeStream] = {}
        self._next_stream = 1
        self._thread = threading.local()  # the current device of each host thread
        self._lock = threading.Lock()

    # --- the per-thread current device and status handling ---

    def current(self) -> int:
        """The calling thread's current device (0 until it calls cudaSetDevice, as in CUDA)."""
        return getattr(self._thread, "device", 0)

    def _call(self, name: str, *args: Any) -> cudaError_t:
        self.log.append((name, args))
        if self.driver_version // 1000 < self.runtime_version // 1000:
            return cudaError_t.cudaErrorInsufficientDriver  # cuda-python built for a newer CUDA than the driver
        return self.fail.get(name, cudaError_t.cudaSuccess)

    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int | None]:
        status = self._call("cudaGetDeviceCount")
        return status, (self.device_count if status == 0 else None)

    def cudaDriverGetVersion(self) -> tuple[cudaError_t, int]:
        self.log.append(("cudaDriverGetVersion", ()))
        return cudaError_t.cudaSuccess, self.driver_version

    def cudaRuntimeGetVersion(self) -> tuple[cudaError_t, int]:
        self.log.append(("cudaRuntimeGetVersion", ()))
        return cudaError_t.cudaSuccess, self.runtime_version

    def cudaSetDevice(self, index: int) -> tuple[cudaError_t]:
        status = self._call("cudaSetDevice", index)
        if status == 0 and not 0 <= index < self.device_count:
            return (cudaError_t.cudaErrorInvalidDevice,)
        if status == 0:
            self._thread.device = index
        return (status,)

    def cudaGetDevice(self) -> tuple[cudaError_t, int | None]:
        status = self._call("cudaGetDevice")
        return status, (self.current() if status == 0 else None)

    def cudaGetDeviceProperties(self, index: int) -> tuple[cudaError_t, Any]:
        status = self._call("cudaGetDeviceProperties", index)
        major, minor = self.compute_capability
        props = SimpleNamespace(
            name=self.gpu_name.encode() + b"\0" * 8, major=major, minor=minor, totalGlobalMem=1 << 34
        )
        return status, props

    # --- memory ---

    def _allocate(self, kind: str, name: str, nbytes: int) -> tuple[cudaError_t, int | None]:
        status = self._call(name, nbytes)
        if status != 0:
            return status, None
        buffer = np.full(max(nbytes, 1), 0xCD, dtype=np.uint8)  # garbage, so a missing copy or sync shows
        address = buffer.ctypes.data
        self.memory[address] = (kind, self.current(), buffer)
        return status, address

    def _release(self, kind: str, name: str, address: int) -> tuple[cudaError_t]:
        status = self._call(name, address)
        if status == 0:
            self.synchronize_all()  # cudaFree / cudaFreeHost wait for the device like a synchronization
            assert self.memory.pop(address)[0] == kind, f"{name} of a pointer that is not {kind} memory"
        return (status,)

    def cudaMalloc(self, nbytes: int) -> tuple[cudaError_t, int | None]:
        return self._allocate("device", "cudaMalloc", nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[cudaError_t, int | None]:
        return self._allocate("host", "cudaMallocHost", nbytes)

    def cudaFree(self, address: int) -> tuple[cudaError_t]:
        return self._release("device", "cudaFree", address)

    def cudaFreeHost(self, address: int) -> tuple[cudaError_t]:
        return self._release("host", "cudaFreeHost", address)

    # --- streams: work runs only when the stream is synchronized ---

    def cudaStreamCreate(self) -> tuple[cudaError_t, int | None]:
        status = self._call("cudaStreamCreate")
        if status != 0:
            return status, None
        stream, self._next_stream = self._next_stream, self._next_stream + 1
        self.streams[stream] = FakeStream(device=self.current())
        return status, stream

    def cudaStreamDestroy(self, stream: int) -> tuple[cudaError_t]:
        status = self._call("cudaStreamDestroy", stream)
        if status == 0:
            self._run(self.streams.pop(stream))  # CUDA finishes a destroyed stream's work, then releases it
        return (status,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[cudaError_t]:
        assert stream in self.streams, "synchronizing a stream that does not exist"
        status = self._call("cudaStreamSynchronize", stream)
        if status == 0:
            self._run(self.streams[stream])
        else:
            self.streams[stream].pending.clear()  # the work failed; its results never arrive
        return (status,)

    def enqueue(self, stream: int, work: Callable[[], None]) -> cudaError_t:
        """Queue ``work`` on ``stream`` (for the fake TensorRT); fails like CUDA for another device's stream."""
        if stream not in self.streams or self.streams[stream].device != self.current():
            return cudaError_t.cudaErrorInvalidResourceHandle
        self.streams[stream].pending.append(work)
        return cudaError_t.cudaSuccess

    def synchronize_all(self) -> None:
        for queued in self.streams.values():
            self._run(queued)

    def _run(self, stream: FakeStream) -> None:
        with self._lock:
            work, stream.pending = stream.pending, []
        for item in work:
            item()

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: int):
        status = self._call("cudaMemcpyAsync", dst, src, count, kind, stream)
        if status != 0:
            return (status,)
        expected = {1: ("device", "host"), 2: ("host", "device")}[int(kind)]
        assert (self.kind_of(dst, count), self.kind_of(src, count)) == expected, "copy direction mismatch"
        device_side = dst if int(kind) == 1 else src
        if self.memory[self._start_of(device_side)][1] != self.current():
            return (cudaError_t.cudaErrorInvalidValue,)  # device memory of another GPU
        return (self.enqueue(stream, lambda: ctypes.memmove(dst, src, count)),)

    def kind_of(self, address: int, count: int) -> str:
        return self.memory[self._start_of(address, count)][0]

    def _start_of(self, address: int, count: int = 1) -> int:
        for start, (_, _, buffer) in self.memory.items():
            if start <= address and address + count <= start + buffer.size:
                return start
        raise AssertionError(f"{count} bytes at {address:#x} are not inside any allocation")

    def cudaGetErrorName(self, status: cudaError_t) -> tuple[cudaError_t, bytes]:
        return cudaError_t.cudaSuccess, cudaError_t(status).name.encode()

    def cudaGetErrorString(self, status: cudaError_t) -> tuple[cudaError_t, bytes]:
        return cudaError_t.cudaSuccess, f"fake CUDA error {int(status)}".encode()


# ------------------------------------------------------------------------------------------------ fake TensorRT ---


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 6


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


_ONNX_TO_TRT = {
    onnx.TensorProto.FLOAT: DataType.FLOAT,
    onnx.TensorProto.FLOAT16: DataType.HALF,
    onnx.TensorProto.UINT8: DataType.UINT8,
    onnx.TensorProto.INT32: DataType.INT32,
    onnx.TensorProto.INT64: DataType.INT64,
    onnx.TensorProto.BOOL: DataType.BOOL,
}
# Elementwise ONNX nodes whose constant inputs become a constant layer plus a broadcast reshape in onnx-tensorrt.
_BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Clip", "Max", "Min", "Equal", "Less", "Where"}


@dataclass
class FakeTensor:
    name: str
    dtype: DataType


class FakeLayer:
    """One layer of a parsed network; records precision and output-type changes."""

    def __init__(
        self, log: CallLog, name: str, metadata: str, inputs: list[FakeTensor | None], outputs: list[FakeTensor]
    ) -> None:
        self._log, self.name, self.metadata = log, name, metadata
        self._inputs, self._outputs = inputs, outputs
        self._precision = DataType.FLOAT

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, index: int) -> FakeTensor | None:
        return self._inputs[index]

    def get_output(self, index: int) -> FakeTensor:
        return self._outputs[index]

    @property
    def precision(self) -> DataType:
        return self._precision

    @precision.setter
    def precision(self, value: DataType) -> None:
        self._log.append(("ILayer.precision", (self.name, value)))
        self._precision = value

    def set_output_type(self, index: int, dtype: DataType) -> None:
        self._log.append(("ILayer.set_output_type", (self.name, index, dtype)))


class FakeNetwork:
    def __init__(self, log: CallLog, flags: int) -> None:
        self.log, self.flags = log, flags
        self.layers: list[FakeLayer] = []
        self.model: onnx.ModelProto | None = None

    num_layers = property(lambda self: len(self.layers))

    def get_layer(self, index: int) -> FakeLayer:
        return self.layers[index]


class FakeParser:
    """Parses into fake layers named and tagged as onnx-tensorrt does (see the module docstring)."""

    def __init__(self, network: FakeNetwork, logger: Any) -> None:
        self.network = network
        self.errors: list[str] = []
        self._names: set[str] = set()
        self._counter = 0
        network.log.append(("OnnxParser", ()))

    def parse(self, data: bytes) -> bool:
        self.network.log.append(("OnnxParser.parse", (len(data),)))
        try:
            model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data), strict_mode=True)
        except Exception as error:  # the real parser reports, never raises
            self.errors.append(str(error))
            return False
        graph = model.graph
        types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
        types.update({t.name: t.data_type for t in graph.initializer})
        io_names = {v.name for v in (*graph.input, *graph.output)}
        constants = {t.name for t in graph.initializer}
        for index, node in enumerate(graph.node):
            error = _uint8_error(node, types, io_names)
            if error:
                self.errors.append(f"In node {index} with name: {node.name} and operator: {node.op_type}: {error}")
                return False
            if node.op_type == "Constant":  # no layer for a Constant node; its users get a constant layer
                constants.update(node.output)
                continue
            self._add_node(node, types, constants)
        self.network.model = model
        return True

    def _add_node(self, node: onnx.NodeProto, types: dict[str, int], constants: set[str]) -> None:
        def tensor(name: str) -> FakeTensor | None:
            return FakeTensor(name, _ONNX_TO_TRT[types[name]]) if name else None

        inputs = [tensor(name) for name in node.input]
        if node.op_type in _BROADCASTING:
            for name in node.input:
                if name in constants:
                    self._layer(name, "", [], [tensor(name)])  # the weights' constant layer, named after them
                    self._layer("ONNXTRT_Broadcast", "", [tensor(name)], [tensor(name)])
        metadata = f"[ONNX Layer: {node.name}]"
        outputs = [tensor(name) for name in node.output]
        if node.op_type == "Clip" and len([name for name in node.input if name]) == 3:
            # two tensor bounds: onnx-tensorrt clips with an elementwise max, then a min, both for this node
            self._layer(node.name, metadata, inputs[:2], [FakeTensor(node.name + "/max", outputs[0].dtype)])
        self._layer(node.name, metadata, inputs, outputs)

    def _layer(self, basename: str, metadata: str, inputs: list, outputs: list) -> None:
        name = basename
        while name in self._names:  # generateUniqueName: basename, then basename_<counter>
            name = f"{basename}_{self._counter}"
            self._counter += 1
        self._names.add(name)
        self.network.layers.append(FakeLayer(self.network.log, name, metadata, inputs, outputs))

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


def _uint8_error(node: onnx.NodeProto, types: dict[str, int], io_names: set[str]) -> str | None:
    """TensorRT supports UINT8 only for network inputs and outputs, converted by a Cast."""
    for name in (*node.input, *node.output):
        if name and types.get(name) == onnx.TensorProto.UINT8:
            if name not in io_names:
                return f"TensorRT does not support UINT8 types for intermediate tensors ({name})"
            if node.op_type != "Cast":
                return f"{node.op_type} does not support UINT8 input/output {name}"
    return None


class FakeProfile:
    def __init__(self, log: CallLog) -> None:
        self.log, self.shapes = log, {}

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        self.log.append(("IOptimizationProfile.set_shape", (name, tuple(low), tuple(opt), tuple(high))))
        assert all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)), "TensorRT requires min <= opt <= max"
        self.shapes[name] = [list(low), list(opt), list(high)]


class FakeTimingCache:
    """Serialized as ``FAKECACHE:<tensorrt version>:<builds>``; a cache of another version mismatches."""

    def __init__(self, version: str, builds: int) -> None:
        self.version, self.builds = version, builds

    def serialize(self) -> bytes:
        return f"FAKECACHE:{self.version}:{self.builds}".encode()


class FakeConfig:
    def __init__(self, trt: ModuleType) -> None:
        self.trt, self.log = trt, trt.log
        self.flags: list[Any] = []
        self.profiles: list[FakeProfile] = []
        self.cache: FakeTimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.log.append(("IBuilderConfig.set_memory_pool_limit", (pool, size)))

    def set_flag(self, flag: Any) -> None:
        self.log.append(("IBuilderConfig.set_flag", (flag,)))
        self.flags.append(flag)

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.log.append(("IBuilderConfig.add_optimization_profile", ()))
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> FakeTimingCache | None:
        self.log.append(("IBuilderConfig.create_timing_cache", (bytes(data),)))
        if not data:
            return FakeTimingCache(self.trt.__version__, 0)
        parts = bytes(data).decode(errors="replace").split(":")
        if len(parts) != 3 or parts[0] != "FAKECACHE":
            return None
        return FakeTimingCache(parts[1], int(parts[2]))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self.log.append(("IBuilderConfig.set_timing_cache", (ignore_mismatch,)))
        if cache.version != self.trt.__version__ and not ignore_mismatch:
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache | None:
        self.log.append(("IBuilderConfig.get_timing_cache", ()))
        return self.cache


class FakeBuilder:
    def __init__(self, trt: ModuleType, logger: Any) -> None:
        self.trt, self.log = trt, trt.log
        self.log.append(("Builder", ()))

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.log.append(("Builder.create_network", (flags,)))
        self.trt.networks.append(FakeNetwork(self.log, flags))
        return self.trt.networks[-1]

    def create_builder_config(self) -> FakeConfig:
        self.log.append(("Builder.create_builder_config", ()))
        return FakeConfig(self.trt)

    def create_optimization_profile(self) -> FakeProfile:
        self.log.append(("Builder.create_optimization_profile", ()))
        return FakeProfile(self.log)

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> bytes | None:
        self.log.append(("Builder.build_serialized_network", ()))
        assert network.model is not None and len(config.profiles) == 1
        if self.trt.build_fails:
            return None
        if config.cache is not None:
            config.cache.builds += 1
        flags = {getattr(flag, "name", str(flag)) for flag in config.flags}
        compatible = "VERSION_COMPATIBLE" in flags
        header = {
            "magic": "FAKEPLAN",
            "version": self.trt.__version__,
            "profile": config.profiles[0].shapes,
            "version_compatible": compatible,
            "lean_runtime_embedded": compatible and "EXCLUDE_LEAN_RUNTIME" not in flags,
        }
        return json.dumps(header).encode() + b"\n" + network.model.SerializeToString()


class FakeEngine:
    def __init__(self, trt: ModuleType, header: dict[str, Any], model_bytes: bytes) -> None:
        self.trt, self.log = trt, trt.log
        self.device = trt.cuda.current()  # an engine lives on the device current when it was deserialized
        self.session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.names = [*self.inputs, *self.outputs]
        self.profile = header["profile"]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        arg = self.inputs.get(name) or self.outputs[name]
        return {"tensor(float)": DataType.FLOAT, "tensor(uint8)": DataType.UINT8}[arg.type]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[list[int]]:
        self.log.append(("ICudaEngine.get_tensor_profile_shape", (name, profile_index)))
        return self.profile[name]

    def create_execution_context(self) -> FakeContext:
        self.log.append(("ICudaEngine.create_execution_context", ()))
        return FakeContext(self)


class FakeContext:
    """Enqueues ONNX Runtime on the bytes at the input address onto the CUDA stream (see the module docstring)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.log = engine, engine.log
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(shape)
        self.log.append(("IExecutionContext.set_input_shape", (name, shape)))
        low, _, high = self.engine.profile[name]
        if not all(a <= d <= b for a, d, b in zip(low, shape, high, strict=True)):
            return False  # what TensorRT does (after logging an error) for a shape outside the profile
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        (input_name,) = self.engine.inputs
        shape = self.shapes[input_name]
        if name == "light_map":
            return (shape[0], 1, shape[2], shape[3])
        return shape

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.log.append(("IExecutionContext.set_tensor_address", (name, address)))
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.log.append(("IExecutionContext.execute_async_v3", (stream_handle,)))
        cuda = self.engine.trt.cuda
        if cuda.current() != self.engine.device:
            return False  # TensorRT enqueues on the current device; this context's memory lives on another
        (input_name,) = self.engine.inputs
        dtype = _numpy(self.engine.get_tensor_dtype(input_name))
        addresses, shape = dict(self.addresses), self.shapes[input_name]  # bound now, as TensorRT does

        def infer() -> None:  # runs when the stream does
            batch = _at(addresses[input_name], shape, dtype).copy()
            outputs = self.engine.session.run(None, {input_name: batch})
            for name, value in zip(self.engine.outputs, outputs, strict=True):
                value = self.engine.trt.corrupt(value) if self.engine.trt.corrupt else value
                _at(addresses[name], value.shape, value.dtype)[...] = value

        return cuda.enqueue(stream_handle, infer) == cudaError_t.cudaSuccess


def _numpy(dtype: DataType) -> np.dtype:
    return np.dtype({DataType.FLOAT: np.float32, DataType.UINT8: np.uint8}[dtype])


def _at(address: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(address)).view(dtype).reshape(shape)


class FakeRuntime:
    """Deserializes fake plans with the rules of the real runtimes (module docstring; cliplit.core.tensorrt)."""

    def __init__(self, trt: ModuleType, logger: Any) -> None:
        self.trt, self.log = trt, trt.log
        self.engine_host_code_allowed = False
        self.log.append(("Runtime", ()))

    def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
        self.log.append(("Runtime.deserialize_cuda_engine", (len(data),)))
        self.log.append(("Runtime.engine_host_code_allowed", (self.engine_host_code_allowed,)))
        header_line, _, model_bytes = bytes(data).partition(b"\n")
        try:
            header = json.loads(header_line)
        except ValueError:
            return None  # TensorRT logs an error and returns None for bytes that are no engine
        if not self._can_run(header):
            return None
        return FakeEngine(self.trt, header, model_bytes)

    def _can_run(self, header: dict[str, Any]) -> bool:
        built, running = _version(header["version"]), _version(self.trt.__version__)
        kind = self.trt.kind
        if not header["version_compatible"]:
            return kind == "full" and built == running
        if kind == "lean":  # the lean runtime is the runtime of one version
            return built == running
        # the full and dispatch runtimes run the lean runtime embedded in the plan, as trusted host code
        return header["lean_runtime_embedded"] and self.engine_host_code_allowed and built <= running


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def make_tensorrt(version: str, log: CallLog, cuda: FakeCudart, *, kind: str = "full") -> ModuleType:
    """A fake TensorRT module of ``version``: ``kind`` "full" (``tensorrt``), "dispatch" or "lean" (runtime only)."""
    major = int(version.split(".")[0])
    trt = ModuleType({"full": "tensorrt", "dispatch": "tensorrt_dispatch", "lean": "tensorrt_lean"}[kind])
    trt.__version__ = version
    trt.kind = kind
    trt.log = log
    trt.cuda = cuda
    trt.corrupt = None  # set to a function of an output array to make engines compute wrong results
    trt.build_fails = False  # set to make build_serialized_network fail (return None)
    trt.networks = []  # every network created, with the ONNX model parsed into it
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity=2: log.append(("Logger", ()))})
    trt.DataType, trt.TensorIOMode, trt.MemoryPoolType = DataType, TensorIOMode, MemoryPoolType
    trt.float32, trt.float16, trt.uint8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.UINT8, DataType.INT32
    trt.Runtime = lambda logger: FakeRuntime(trt, logger)
    if kind != "full":
        return trt
    if major >= 11:  # weak typing and its precision flags are gone; STRONGLY_TYPED is kept but ignored
        trt.BuilderFlag = enum.Enum("BuilderFlag", {"VERSION_COMPATIBLE": 11, "EXCLUDE_LEAN_RUNTIME": 12})
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
    else:
        trt.BuilderFlag = enum.Enum(
            "BuilderFlag",
            {
                "FP16": 0,
                "INT8": 1,
                "OBEY_PRECISION_CONSTRAINTS": 9,
                "VERSION_COMPATIBLE": 11,
                "EXCLUDE_LEAN_RUNTIME": 12,
            },
        )
        trt.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        )
    trt.Builder = lambda logger: FakeBuilder(trt, logger)
    trt.OnnxParser = FakeParser
    return trt


@dataclass
class FakeStack:
    """The installed fakes of one test: the TensorRT module, the CUDA runtime and their shared call log."""

    trt: ModuleType
    cuda: FakeCudart
    log: CallLog


def install(
    monkeypatch: pytest.MonkeyPatch, version: str = "10.9.0.34", *, kind: str = "full", **cuda: Any
) -> FakeStack:
    """Put a fake TensorRT (only the module of ``kind``) and a fake CUDA runtime into ``sys.modules``."""
    log = CallLog()
    fake_cuda = FakeCudart(log, **cuda)
    trt = make_tensorrt(version, log, fake_cuda, kind=kind)
    for name in ("tensorrt", "tensorrt_dispatch", "tensorrt_lean"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes ``import name`` fail
    monkeypatch.setitem(sys.modules, trt.__name__, trt)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake_cuda)
    return FakeStack(trt=trt, cuda=fake_cuda, log=log)
