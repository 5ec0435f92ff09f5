"""The GPU side of `cliplit bench` (CUDA events, FP16 variants, GPU peaks); skipped on machines without CUDA.

The CPU tests cover the same harness code paths with host clocks; these check that the GPU ones work on hardware.
"""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"),
]


def test_cuda_event_clock_times_gpu_work():
    from cliplit.benchmarks.harness import CudaEventClock

    a = torch.rand(2048, 2048, device="cuda")
    clock = CudaEventClock()
    torch.cuda.synchronize()
    host_start = time.perf_counter()
    clock.start()
    for _ in range(10):
        a = a @ a / 2048
    gpu_ms = clock.stop()
    host_ms = (time.perf_counter() - host_start) * 1000.0  # stop() waits for the GPU, so this bounds the events
    assert 0.0 < gpu_ms <= host_ms * 1.05 + 0.1, (gpu_ms, host_ms)


def test_gpu_peaks_are_measured_in_both_precisions():
    from cliplit.benchmarks.peak import best_peak, measure_peaks

    peaks = measure_peaks(cpu_n=64, gpu_n=2048, repeats=2)
    fp32, fp16 = best_peak(peaks, "cuda", "float32"), best_peak(peaks, "cuda", "float16")
    assert fp32 is not None and fp16 is not None
    assert fp16.gflops > fp32.gflops, "tensor-core FP16 should outrun plain FP32"


def test_suite_on_the_gpu_uses_cuda_events_and_reports_fp16_fidelity(cliplit_home):
    from cliplit.benchmarks.suite import SuiteConfig, run_suite
    from cliplit.benchmarks.workloads import parse_sizes

    backends = ["torch", "torch-fp16", "onnxruntime-cuda"]
    config = SuiteConfig(backends=backends, sizes=parse_sizes("128x96"), warmup=1, repeats=3, peak_n=64)
    results = run_suite(config, log=lambda _message: None)
    by_name = {r["backend"]: r for r in results["records"]}
    assert by_name["torch"]["clock"] == "cuda_events" and by_name["torch"]["device"] == "cuda"
    assert by_name["torch-fp16"]["status"] == "ok" and by_name["torch-fp16"]["psnr_vs_fp32"] > 35
    assert by_name["torch-fp16"]["precision"] == "float16"
    assert by_name["torch-fp16"]["bench_only"] and not by_name["torch"]["bench_only"]
    if "onnxruntime-cuda" in by_name:
        assert by_name["onnxruntime-cuda"]["clock"] == "perf_counter+device_sync"
        assert by_name["onnxruntime-cuda"]["details"]["providers"][0] == "CUDAExecutionProvider"
