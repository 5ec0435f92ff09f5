"""The measured matmul peak and the machine description that every results file carries."""

from __future__ import annotations

import json
import os

import pytest

from cliplit.benchmarks import peak
from cliplit.benchmarks.machine import SIMD_FLAGS, cpu_features, load_snapshot, machine_info
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


def test_other_load_reads_this_machine():
    from cliplit.benchmarks.machine import OtherLoad

    meter = OtherLoad()
    meter.start()
    sum(range(200_000))
    value = meter.stop()
    assert value is None or value >= 0.0
