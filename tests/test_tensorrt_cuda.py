"""The checked cuda-python wrapper: every failing status raises, GPU discovery explains missing GPUs and drivers."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from tensorrt_fakes import CallLog, FakeCudart, cudaError_t

from cliplit.core.cuda import CudaError, CudaRuntime, host_array, load_cudart
from cliplit.core.errors import CliplitError


def test_results_are_unwrapped_and_data_moves() -> None:
    cuda = CudaRuntime(FakeCudart(CallLog()))
    gpu = cuda.gpu(0)
    assert (gpu.name, gpu.compute_capability) == ("NVIDIA Fake GPU", "8.9")
    host, device, back = cuda.malloc_host(16), cuda.malloc(16), cuda.malloc_host(16)
    stream = cuda.stream_create()
    host_array(host, 16)[:] = np.arange(16, dtype=np.uint8)
    cuda.copy_to_device(device, host, 16, stream)
    cuda.copy_to_host(back, device, 16, stream)
    cuda.stream_synchronize(stream)
    assert host_array(back, 16).tolist() == list(range(16))


@pytest.mark.parametrize(
    ("function", "call"),
    [
        ("cudaMalloc", lambda cuda: cuda.malloc(64)),
        ("cudaMallocHost", lambda cuda: cuda.malloc_host(64)),
        ("cudaStreamCreate", lambda cuda: cuda.stream_create()),
        ("cudaSetDevice", lambda cuda: cuda.gpu(0)),
        ("cudaGetDeviceProperties", lambda cuda: cuda.gpu(0)),
    ],
)
def test_every_failing_status_raises_with_the_cuda_error_name(function: str, call) -> None:
    cuda = CudaRuntime(FakeCudart(CallLog(), fail={function: cudaError_t.cudaErrorMemoryAllocation}))
    with pytest.raises(CudaError, match=f"CUDA call {function} failed: cudaErrorMemoryAllocation"):
        call(cuda)


def test_copy_failures_raise() -> None:
    fake = FakeCudart(CallLog())
    cuda = CudaRuntime(fake)
    host, device, stream = cuda.malloc_host(8), cuda.malloc(8), cuda.stream_create()
    fake.fail["cudaMemcpyAsync"] = cudaError_t.cudaErrorInvalidValue
    with pytest.raises(CudaError, match="cudaMemcpyAsync failed: cudaErrorInvalidValue"):
        cuda.copy_to_device(device, host, 8, stream)


def test_no_driver_and_no_gpu_are_explained() -> None:
    no_driver = FakeCudart(
        CallLog(), driver_version=0, fail={"cudaGetDeviceCount": cudaError_t.cudaErrorInsufficientDriver}
    )
    with pytest.raises(CudaError, match="no usable NVIDIA GPU: no NVIDIA driver is installed"):
        CudaRuntime(no_driver).gpu(0)
    no_device = FakeCudart(CallLog(), fail={"cudaGetDeviceCount": cudaError_t.cudaErrorNoDevice})
    with pytest.raises(CudaError, match="no usable NVIDIA GPU: CUDA call cudaGetDeviceCount failed: cudaErrorNoDevice"):
        CudaRuntime(no_device).gpu(0)
    with pytest.raises(CudaError, match="GPU 1 does not exist; this machine has 1 CUDA device"):
        CudaRuntime(FakeCudart(CallLog())).gpu(1)


def test_an_insufficient_driver_says_which_driver_or_package_is_needed() -> None:
    """cuda-python 13 on a CUDA 12.8 driver: every call fails; the message names r580 and the CUDA 12 build."""
    fake = FakeCudart(CallLog(), driver_version=12080, runtime_version=13000)
    with pytest.raises(CudaError) as caught:
        CudaRuntime(fake).gpu(0)
    message = str(caught.value)
    assert message.startswith("no usable NVIDIA GPU: CUDA call cudaGetDeviceCount failed: cudaErrorInsufficientDriver")
    assert "The NVIDIA driver supports CUDA 12.8, but this cuda-python is built for CUDA 13.0" in message
    assert "needs driver r580 or newer: update the driver, or install the CUDA 12 build" in message
    assert "pip install 'cliplit[tensorrt-cu12]'" in message
    too_old = FakeCudart(CallLog(), driver_version=11080, runtime_version=12060)
    with pytest.raises(CudaError, match=r"built for CUDA 12\.6, which needs driver r525 or newer.*no cliplit build"):
        CudaRuntime(too_old).malloc(16)


def test_set_device_is_per_thread() -> None:
    """What the backend relies on: a new thread starts on device 0 until it sets its own (as in CUDA)."""
    import threading

    fake = FakeCudart(CallLog(), device_count=2)
    cuda = CudaRuntime(fake)
    cuda.set_device(1)
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(cuda.current_device()))
    worker.start()
    worker.join()
    assert (cuda.current_device(), seen) == (1, [0])
    with pytest.raises(CudaError, match="cudaSetDevice failed: cudaErrorInvalidDevice"):
        cuda.set_device(2)


def test_async_copies_land_only_on_synchronize() -> None:
    cuda = CudaRuntime(FakeCudart(CallLog()))
    host, device, back = cuda.malloc_host(8), cuda.malloc(8), cuda.malloc_host(8)
    stream = cuda.stream_create()
    host_array(host, 8)[:] = np.arange(8, dtype=np.uint8)
    cuda.copy_to_device(device, host, 8, stream)
    cuda.copy_to_host(back, device, 8, stream)
    assert host_array(back, 8).tolist() == [0xCD] * 8  # enqueued, not done
    cuda.stream_synchronize(stream)
    assert host_array(back, 8).tolist() == list(range(8))


def test_missing_cuda_python_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", None)
    with pytest.raises(CliplitError, match=r"cuda-python is not installed.*pip install 'cliplit\[tensorrt\]'"):
        load_cudart()


def _real_gpu_present() -> bool:
    try:
        CudaRuntime().gpu(0)
    except CliplitError:
        return False
    return True


@pytest.mark.skipif(importlib.util.find_spec("cuda.bindings") is None, reason="cuda-python is not installed")
def test_real_cuda_python_on_a_machine_without_gpu() -> None:
    """The real bindings (no fake): on this CPU-only machine GPU discovery must fail with the clear message."""
    if _real_gpu_present():
        pytest.skip("this machine has a usable NVIDIA GPU")
    with pytest.raises(CudaError, match="no usable NVIDIA GPU"):
        CudaRuntime().gpu(0)
