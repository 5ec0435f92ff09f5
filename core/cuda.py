"""The few CUDA runtime calls TensorRT inference needs, through cuda-python, each one's status checked.

cuda-python's functions return ``(status, *results)`` tuples instead of raising, so an unchecked call that failed
hands ``None`` or a stale pointer to the next call and the crash happens far from the cause. Every call here goes
through ``CudaRuntime.call``, which raises ``CudaError`` naming the call and CUDA's error name and text. cuda-python
12.6+ and 13.x ship the bindings as ``cuda.bindings.runtime`` (same functions in both); older releases as
``cuda.cudart``.

Two facts of the CUDA runtime shape this module. The current device is per host thread (``cudaSetDevice``, CUDA
Runtime API, "Device Management"), so code that uses one GPU from several threads must set it on each of them:
``set_device`` is cheap and callers call it at the top of every entry point. And cuda-python's runtime bindings are
built for one CUDA major version: cuda-python 13 needs an NVIDIA driver for CUDA 13 (r580 or newer), and on an older
driver every call fails with ``cudaErrorInsufficientDriver``; that error is turned into a message saying which driver
or which package to install.
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from cliplit.core.errors import CliplitError

INSTALL_HINT = (
    "pip install 'cliplit[tensorrt]' (cuda-python 13, NVIDIA driver r580 or newer) or "
    "pip install 'cliplit[tensorrt-cu12]' (cuda-python 12, for older drivers)"
)
#: the oldest Linux driver branch each CUDA major version runs on (CUDA release notes, "CUDA Toolkit and
#: Corresponding Driver Versions", minor-version compatibility); TensorRT itself asks for r535 or newer
MIN_DRIVER = {12: "r525", 13: "r580"}
#: the extra that installs TensorRT and cuda-python for each CUDA major version
EXTRA_FOR_CUDA = {12: "cliplit[tensorrt-cu12]", 13: "cliplit[tensorrt-cu13]"}
INSUFFICIENT_DRIVER = "cudaErrorInsufficientDriver"


class CudaError(CliplitError):
    """A CUDA call failed; the message names the call and CUDA's error."""


@dataclass(frozen=True)
class GpuInfo:
    """The facts about a GPU that decide whether an engine runs on it."""

    index: int
    name: str
    compute_capability: str  # "major.minor"
    total_memory: int


def load_cudart() -> ModuleType:
    """Import the CUDA runtime bindings, newest location first."""
    for module_name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(module_name)
        except ImportError:
            continue
    raise CliplitError(f"cuda-python is not installed; TensorRT inference needs it: {INSTALL_HINT}")


class CudaRuntime:
    """Checked wrappers around the CUDA runtime API; ``module`` defaults to the installed cuda-python."""

    def __init__(self, module: ModuleType | None = None) -> None:
        self.rt = module if module is not None else load_cudart()
        self._success = self.rt.cudaError_t.cudaSuccess

    def call(self, function: str, *args: Any) -> Any:
        """Call ``cudart.<function>(*args)``; return its result (None, one value or a tuple) or raise CudaError."""
        status, *results = getattr(self.rt, function)(*args)
        if status != self._success:
            raise CudaError(f"CUDA call {function} failed: {self._describe(status)}")
        if not results:
            return None
        return results[0] if len(results) == 1 else tuple(results)

    def _describe(self, status: Any) -> str:
        try:
            _, name = self.rt.cudaGetErrorName(status)
            _, text = self.rt.cudaGetErrorString(status)
            name = _text(name)
        except Exception:  # describing the error must never hide it
            return str(status)
        described = f"{name} ({_text(text)})"
        if name == INSUFFICIENT_DRIVER:
            described += f". {self.driver_advice()}"
        return described

    def versions(self) -> tuple[int, int]:
        """(driver, runtime) CUDA versions as CUDA encodes them (12080 = 12.8); the driver's is 0 without one."""
        _, driver = self.rt.cudaDriverGetVersion()
        _, runtime = self.rt.cudaRuntimeGetVersion()
        return int(driver or 0), int(runtime or 0)

    def driver_advice(self) -> str:
        """What to install when the driver is older than the CUDA version cuda-python was built for."""
        try:
            driver, runtime = self.versions()
        except Exception:  # advice is a bonus; never let it hide the error
            return f"Update the NVIDIA driver, or install the cuda-python build that matches it: {INSTALL_HINT}"
        needed = MIN_DRIVER.get(runtime // 1000, "a newer driver")
        if driver == 0:
            return (
                f"No NVIDIA driver is installed (or it cannot be loaded): this cuda-python is built for CUDA "
                f"{_version(runtime)} and needs driver {needed} or newer"
            )
        usable = [major for major in EXTRA_FOR_CUDA if major * 1000 <= driver]
        if usable:
            best = usable[-1]
            fix = f"or install the CUDA {best} build, which this driver runs: pip install '{EXTRA_FOR_CUDA[best]}'"
        else:
            fix = f"no cliplit build runs on CUDA {_version(driver)}"
        return (
            f"The NVIDIA driver supports CUDA {_version(driver)}, but this cuda-python is built for CUDA "
            f"{_version(runtime)}, which needs driver {needed} or newer: update the driver, {fix}"
        )

    def gpu(self, index: int = 0) -> GpuInfo:
        """Select GPU ``index`` for this thread and describe it; raise a clear error where there is no usable GPU."""
        try:
            count = self.call("cudaGetDeviceCount")
        except CudaError as error:
            driver = self.rt.cudaDriverGetVersion()
            no_driver = driver[0] == self._success and driver[1] == 0
            why = "no NVIDIA driver is installed" if no_driver else str(error)
            raise CudaError(f"no usable NVIDIA GPU: {why}. TensorRT needs an NVIDIA GPU with its driver") from None
        if not 0 <= index < count:
            raise CudaError(f"GPU {index} does not exist; this machine has {count} CUDA device(s)")
        self.set_device(index)
        props = self.call("cudaGetDeviceProperties", index)
        return GpuInfo(
            index=index,
            name=_text(props.name),
            compute_capability=f"{props.major}.{props.minor}",
            total_memory=int(props.totalGlobalMem),
        )

    def set_device(self, index: int) -> None:
        """Make GPU ``index`` current for the calling thread (the CUDA runtime keeps one current device per thread)."""
        self.call("cudaSetDevice", index)

    def current_device(self) -> int:
        return int(self.call("cudaGetDevice"))

    def malloc(self, nbytes: int) -> int:
        return int(self.call("cudaMalloc", nbytes))

    def free(self, pointer: int) -> None:
        self.call("cudaFree", pointer)

    def malloc_host(self, nbytes: int) -> int:
        """Page-locked host memory: the only kind an asynchronous copy really overlaps with compute."""
        return int(self.call("cudaMallocHost", nbytes))

    def free_host(self, pointer: int) -> None:
        self.call("cudaFreeHost", pointer)

    def stream_create(self) -> Any:
        return self.call("cudaStreamCreate")

    def stream_destroy(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", stream)

    def stream_synchronize(self, stream: Any) -> None:
        self.call("cudaStreamSynchronize", stream)

    def copy_to_device(self, device: int, host: int, nbytes: int, stream: Any) -> None:
        self.call("cudaMemcpyAsync", device, host, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def copy_to_host(self, host: int, device: int, nbytes: int, stream: Any) -> None:
        self.call("cudaMemcpyAsync", host, device, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)


def host_array(pointer: int, nbytes: int) -> np.ndarray:
    """A writable uint8 NumPy view of ``nbytes`` of host memory at ``pointer`` (e.g. from ``malloc_host``)."""
    return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(pointer))


def _version(encoded: int) -> str:
    """CUDA's integer version (12080) as text (12.8)."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode(errors="replace")
    return str(value)
