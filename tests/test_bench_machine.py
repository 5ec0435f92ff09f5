"""The measured matmul peak and the machine description that every results file carries."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cliplit.benchmarks import peak
from cliplit.benchmarks.machine import (
    SIMD_FLAGS,
    cpu_features,
    load_snapshot,
    machine_info,
    peak_rss_mib,
    reset_peak_rss,
)
from cliplit.benchmarks.peak import PeakMeasurement, best_peak, measure_peaks


def test_every_cpu_gemm_is_measured_at_three_sizes():
    results = measure_peaks(cpu_n=64, repeats=1)
    cpu = [m for m in results if m.device == "cpu"]
    assert {(m.implementation, m.n) for m in cpu} == {
        (name, n) for name in ("numpy", "onnxruntime", "torch") for n in (16, 32, 64)
    }
    for m in cpu:
        assert m.error is None, m.error
        assert m.gflops == pytest.approx(2 * m.n**3 / (m.best_ms / 1000) / 1e9)
    json.dumps([m.to_dict() for m in results], allow_nan=False)


def test_openvino_gemms_are_measured_in_the_precisions_asked_for():
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    import openvino as ov

    results = measure_peaks(cpu_n=64, repeats=1, openvino={"float32", "bfloat16"})
    openvino = [m for m in results if m.implementation == "openvino"]
    assert {(m.dtype, m.n) for m in openvino} == {(d, n) for d in ("float32", "bfloat16") for n in (16, 32, 64)}
    assert all(m.error is None for m in openvino if m.dtype == "float32")
    bf16 = [m for m in openvino if m.dtype == "bfloat16"]
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert all(m.error is None for m in bf16)
        assert best_peak(results, "cpu", "bfloat16").implementation == "openvino"
    else:  # never an FP32 figure under a bf16 label
        assert all("not bf16" in m.error for m in bf16)
    assert not any(m.dtype == "float16" for m in results), "only the precisions asked for"


def test_peak_rss_is_measured_from_the_last_reset():
    before = reset_peak_rss()
    if before is None:
        pytest.skip("this kernel has no /proc/self/clear_refs")
    # 64 MiB of fresh pages, touched: an anonymous map, not the heap, whose freed pages earlier tests may have left
    # resident (then RSS would not grow and the test would fail for a reason that is not the code's).
    with mmap.mmap(-1, 64 * 2**20) as block:
        np.frombuffer(block, dtype=np.uint8)[:] = 1
        grown = peak_rss_mib()
    assert grown >= before + 60
    after_reset = reset_peak_rss()
    assert peak_rss_mib() < grown and after_reset < grown


def test_a_failing_gemm_is_recorded_with_its_reason(monkeypatch):
    torch = pytest.importorskip("torch")

    def broken(*_args: object) -> None:
        raise RuntimeError("no BLAS today")

    monkeypatch.setattr(torch, "matmul", broken)
    result = peak._torch_cpu(32, 1)
    assert result.error == "RuntimeError: no BLAS today"
    assert result.gflops is None and result.best_ms is None
    json.dumps(result.to_dict(), allow_nan=False)


def test_best_peak_takes_the_fastest_successful_measurement_of_that_device_and_dtype():
    measurements = [
        PeakMeasurement("numpy", "cpu", "float32", 64, 1.0, 100.0),
        PeakMeasurement("onnxruntime", "cpu", "float32", 64, 0.5, 200.0),
        PeakMeasurement("torch", "cpu", "float32", 64, None, None, "RuntimeError: x"),
        PeakMeasurement("torch", "cuda", "float16", 64, 0.1, 900.0),
    ]
    assert best_peak(measurements, "cpu", "float32").implementation == "onnxruntime"
    assert best_peak(measurements, "cuda", "float16").gflops == 900.0
    assert best_peak(measurements, "cuda", "float32") is None


def test_machine_block_names_the_hardware_and_versions():
    info = machine_info()
    assert info["logical_cpus"] >= 1 and info["usable_cpus"] >= 1
    assert info["cpu_model"]
    assert set(cpu_features()) <= SIMD_FLAGS
    for library in ("numpy", "torch", "onnxruntime", "opencv"):
        assert info["libraries"][library], f"{library} version missing"
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    json.dumps(info, allow_nan=False)


def test_load_snapshot_reports_load_and_busy_processes_but_not_itself():
    snapshot = load_snapshot()
    assert len(snapshot["load_average"]) == 3
    assert all(f"pid {os.getpid()}," not in line for line in snapshot["other_busy_processes"])


def test_other_load_is_machine_busy_time_minus_our_own_over_wall_time(monkeypatch):
    from types import SimpleNamespace

    from cliplit.benchmarks import machine

    busy = iter([100.0, 106.0])  # the whole machine: 6 CPU-seconds busy ...
    own = iter([10.0, 12.0])  # ... of which 2 were ours ...
    wall = iter([50.0, 54.0])  # ... in 4 seconds: others kept one core busy on average
    monkeypatch.setattr(machine, "_machine_busy_seconds", lambda: next(busy))
    monkeypatch.setattr(machine, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(machine, "time", SimpleNamespace(perf_counter=lambda: next(wall)))
    meter = machine.OtherLoad()
    meter.start()
    assert meter.stop() == pytest.approx(1.0)


def test_other_load_is_unknown_without_proc_stat(monkeypatch):
    from cliplit.benchmarks import machine

    monkeypatch.setattr(machine, "_machine_busy_seconds", lambda: None)
    meter = machine.OtherLoad()
    meter.start()
    assert meter.stop() is None


def test_other_load_counts_another_process_not_this_one():
    """A busy child that has not been waited for is another process to the meter; this process's own work is not."""
    from cliplit.benchmarks.machine import OtherLoad

    if not Path("/proc/stat").is_file():
        pytest.skip("reads /proc/stat (Linux)")
    meter = OtherLoad()
    meter.start()
    spin = "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    end = time.perf_counter() + 0.6  # many clock ticks (10 ms each), so the reading means something
    while time.perf_counter() < end:
        sum(range(10_000))
    value = meter.stop()
    busy.wait()
    # the child keeps most of a core busy even with this process spinning on the other; never more than the cores
    assert value is not None and 0.4 <= value <= os.cpu_count(), "cores other processes kept busy, on Linux"


def test_the_onnxruntime_peak_model_declares_an_ir_version_older_runtimes_read(monkeypatch):
    """onnx writes its own newest IR version by default, which ONNX Runtime 1.30 refused (IR 14); the one-node
    MatMul model must declare the IR version of its opset (8 for opset 17)."""
    import onnx
    import onnxruntime as ort

    seen = []
    real_session = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda model, **kw: seen.append(model) or real_session(model, **kw))
    result = peak._onnxruntime_cpu(64, 1)
    assert result.error is None and result.gflops > 0
    assert onnx.load_from_string(seen[0]).ir_version == 8
