"""Load a TensorRT engine and run single batches on it, synchronously: what the builder's parity check needs.

In core so that the exporter checks the engines it builds without importing the runtime (export and runtime never
import each other). The runtime's backend (``cliplit.runtime.backends.tensorrt``) overlaps frames on several streams
with reused buffers; a parity check runs a handful of batches, so here each run allocates, runs and frees.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from cliplit.core.cuda import CudaRuntime, host_array
from cliplit.core.errors import CliplitError
from cliplit.core.tensorrt import import_tensorrt


def deserialize_engine(trt: ModuleType, logger: Any, path: Path, *, host_code: bool, hint: str) -> tuple[Any, Any]:
    """(runtime, engine) of the plan at ``path``; the engine must not outlive its runtime.

    ``host_code``: let a version-compatible plan run the lean runtime it embeds (``IRuntime.engine_host_code_allowed``,
    default False; the developer guide's "Version Compatibility" section; trtexec sets it for every version-compatible
    engine). Only for plans export-engine built, which are trusted like the rest of the model. ``hint`` ends the error
    when the plan cannot be loaded.
    """
    runtime = trt.Runtime(logger)
    if host_code:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise CliplitError(f"TensorRT {trt.__version__} could not deserialize {path} (its log above says why); {hint}")
    return runtime, engine


def numpy_dtype(trt: ModuleType, dtype: Any) -> np.dtype:
    """The NumPy type of a TensorRT tensor type cliplit's engines use (float32, float16, uint8)."""
    for member, numpy_type in (
        (trt.DataType.FLOAT, np.float32),
        (trt.DataType.HALF, np.float16),
        (trt.DataType.UINT8, np.uint8),
    ):
        if dtype == member:
            return np.dtype(numpy_type)
    raise CliplitError(f"unsupported TensorRT tensor type {dtype}")


class EngineRunner:
    """An engine of export-engine on GPU ``device``, one batch at a time (one execution context, one stream)."""

    def __init__(self, path: str | os.PathLike[str], *, device: int = 0, version_compatible: bool = False) -> None:
        self._trt = import_tensorrt()
        self._cuda = CudaRuntime()
        self._device = self._cuda.gpu(device).index
        self._runtime, self._engine = deserialize_engine(
            self._trt,
            self._trt.Logger(self._trt.Logger.WARNING),
            Path(path),
            host_code=version_compatible,
            hint="rebuild the engine with export-engine on this machine",
        )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = self._trt.TensorIOMode.INPUT
        self._inputs = [name for name in names if self._engine.get_tensor_mode(name) == mode]
        self._outputs = [name for name in names if name not in self._inputs]
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise CliplitError(f"TensorRT could not create an execution context for {path} (GPU memory?)")
        self._stream = self._cuda.stream_create()

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The engine's outputs by name for ``inputs`` by name (shapes inside its optimization profile)."""
        self._cuda.set_device(self._device)
        context = self._context
        arrays = {name: np.ascontiguousarray(inputs[name]) for name in self._inputs}
        for name, array in arrays.items():
            if not context.set_input_shape(name, array.shape):
                raise CliplitError(f"TensorRT rejected input {name!r} of shape {array.shape}")
        shapes = {name: tuple(array.shape) for name, array in arrays.items()}
        shapes |= {name: tuple(context.get_tensor_shape(name)) for name in self._outputs}
        dtypes = {name: numpy_dtype(self._trt, self._engine.get_tensor_dtype(name)) for name in shapes}
        sizes = {name: int(np.prod(shape)) * dtypes[name].itemsize for name, shape in shapes.items()}
        buffers: dict[str, tuple[int, int]] = {}
        try:
            for name, nbytes in sizes.items():
                buffers[name] = (self._cuda.malloc(nbytes), self._cuda.malloc_host(nbytes))
                if not context.set_tensor_address(name, buffers[name][0]):
                    raise CliplitError(f"TensorRT rejected the device address of tensor {name!r}")
            for name, array in arrays.items():
                device, host = buffers[name]
                host_array(host, sizes[name])[...] = array.view(np.uint8).reshape(-1)
                self._cuda.copy_to_device(device, host, sizes[name], self._stream)
            if not context.execute_async_v3(int(self._stream)):
                raise CliplitError("TensorRT failed to enqueue inference (its log above says why)")
            for name in self._outputs:
                device, host = buffers[name]
                self._cuda.copy_to_host(host, device, sizes[name], self._stream)
            self._cuda.stream_synchronize(self._stream)
            return {
                name: host_array(buffers[name][1], sizes[name]).view(dtypes[name]).reshape(shapes[name]).copy()
                for name in self._outputs
            }
        finally:
            for device, host in buffers.values():
                self._cuda.free(device)
                self._cuda.free_host(host)

    def close(self) -> None:
        """Finish queued work and release the stream, the context and the engine."""
        self._cuda.set_device(self._device)
        self._cuda.stream_synchronize(self._stream)
        self._cuda.stream_destroy(self._stream)
        self._context = self._engine = self._runtime = None
