"""``cliplit.core.cuda.CudaRuntime`` against real CUDA (cuda-python 12 or 13): memory, copies, streams, devices, errors.

GPU-only: skipped, with the reason, where cuda-python or a usable NVIDIA GPU is missing (the fake-based tests in
tests/test_tensorrt_cuda.py cover the same wrapper on CPU). Needs only numpy, pytest and cuda-python: when cliplit is
not installed, ``cliplit.core`` is loaded straight from this checkout, so on a bare GPU machine

    python3 -m pytest tests/test_cuda_gpu.py

runs it without installing anything else.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_core() -> types.ModuleType:
    """``cliplit.core.cuda``, installed or from this checkout (core/ imports nothing but numpy and itself)."""
    if importlib.util.find_spec("cliplit") is None:
        for name, path in (("cliplit", None), ("cliplit.core", ROOT / "core")):
            package = types.ModuleType(name)
            package.__path__ = [str(path)] if path else []
            sys.modules.setdefault(name, package)
    return importlib.import_module("cliplit.core.cuda")


cuda_module = _load_core()
CudaError, CudaRuntime, host_array = cuda_module.CudaError, cuda_module.CudaRuntime, cuda_module.host_array


def _why_not() -> str | None:
    """None when real CUDA with a GPU is usable here, else why not."""
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        return "cuda-python (cuda.bindings) is not installed"
    try:
        CudaRuntime().gpu(0)
    except Exception as error:  # any failure means: no usable GPU here
        return str(error)
    return None


WHY_NOT = _why_not()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(WHY_NOT is not None, reason=f"needs a CUDA GPU: {WHY_NOT}")]


@pytest.fixture(autouse=True)
def cliplit_home() -> None:
    """Replaces tests/conftest.py's session fixture, which copies ../shared weights these tests do not need."""


@pytest.fixture
def cuda() -> CudaRuntime:
    return CudaRuntime()


def test_gpu_is_described_as_cuda_reports_it(cuda: CudaRuntime) -> None:
    count = cuda.call("cudaGetDeviceCount")
    gpu = cuda.gpu(count - 1)
    props = cuda.call("cudaGetDeviceProperties", count - 1)
    assert gpu.index == count - 1 and gpu.name and gpu.total_memory == int(props.totalGlobalMem)
    assert gpu.compute_capability == f"{props.major}.{props.minor}"
    assert cuda.current_device() == count - 1
    with pytest.raises(CudaError, match=f"GPU {count} does not exist; this machine has {count}"):
        cuda.gpu(count)


def test_pinned_memory_async_copies_and_synchronize_round_trip(cuda: CudaRuntime) -> None:
    cuda.gpu(0)
    nbytes = 64 << 20  # large enough that the copies are still running when they are enqueued
    source, back = cuda.malloc_host(nbytes), cuda.malloc_host(nbytes)
    device = cuda.malloc(nbytes)
    stream = cuda.stream_create()
    try:
        data = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
        host_array(source, nbytes)[:] = data
        host_array(back, nbytes)[:] = 0
        cuda.copy_to_device(device, source, nbytes, stream)
        cuda.copy_to_host(back, device, nbytes, stream)
        cuda.stream_synchronize(stream)
        assert np.array_equal(host_array(back, nbytes), data)
    finally:
        cuda.stream_destroy(stream)
        cuda.free(device)
        cuda.free_host(source)
        cuda.free_host(back)


def test_a_worker_thread_uses_the_device_it_sets(cuda: CudaRuntime) -> None:
    """The current device is per thread: a new thread starts on device 0 and allocates on the one it sets."""
    count = cuda.call("cudaGetDeviceCount")
    target = count - 1
    cuda.set_device(target)
    seen: dict[str, int] = {}

    def worker() -> None:
        seen["before"] = cuda.current_device()
        cuda.set_device(target)
        seen["after"] = cuda.current_device()
        pointer = cuda.malloc(1024)
        seen["allocated_on"] = int(cuda.call("cudaPointerGetAttributes", pointer).device)
        cuda.free(pointer)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"before": 0, "after": target, "allocated_on": target}  # with one GPU, target is 0 too


def test_cuda_errors_name_the_call_and_the_error(cuda: CudaRuntime) -> None:
    cuda.gpu(0)
    with pytest.raises(CudaError, match=r"CUDA call cudaSetDevice failed: cudaErrorInvalidDevice"):
        cuda.set_device(cuda.call("cudaGetDeviceCount"))


def test_insufficient_driver_is_explained_with_the_real_versions(cuda: CudaRuntime) -> None:
    """A fake status through the real bindings: the advice uses this machine's real driver and runtime versions."""
    real = cuda.rt

    class OneFailingCall(types.ModuleType):
        def __getattr__(self, name: str):
            return getattr(real, name)

        @staticmethod
        def cudaPretendCall():
            return (real.cudaError_t.cudaErrorInsufficientDriver,)

    driver, runtime = cuda.versions()
    assert driver >= 12000 and runtime >= 12000
    with pytest.raises(CudaError) as caught:
        CudaRuntime(OneFailingCall("cuda.bindings.runtime")).call("cudaPretendCall")
    message = str(caught.value)
    assert message.startswith("CUDA call cudaPretendCall failed: cudaErrorInsufficientDriver")
    driver_text = f"{driver // 1000}.{driver % 1000 // 10}"
    runtime_text = f"{runtime // 1000}.{runtime % 1000 // 10}"
    assert f"The NVIDIA driver supports CUDA {driver_text}, but this cuda-python is built for CUDA {runtime_text}" in (
        message
    )
    assert f"needs driver {cuda_module.MIN_DRIVER[runtime // 1000]} or newer" in message
    assert f"pip install '{cuda_module.EXTRA_FOR_CUDA[min(driver // 1000, 13)]}'" in message
