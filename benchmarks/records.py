"""The records of a bench run: one per backend × size × batch, and the numbers derived from the whole run.

A record is filled in two steps: while its backend is loaded (timing, fidelity on the check frame, what the backend
says about how it ran), and at the end of the run (FLOPs, GFLOP/s, % of peak, speedup), when the baseline's times
and the peaks are known. Kept apart from the orchestration in ``cliplit.benchmarks.suite`` so each reads alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cliplit.benchmarks.fidelity import Fidelity
from cliplit.benchmarks.flops import flops_per_frame
from cliplit.benchmarks.harness import Clock, Timing
from cliplit.benchmarks.peak import PeakMeasurement, best_peak
from cliplit.benchmarks.registry import BASELINE, BackendEntry
from cliplit.runtime.backends.base import Backend


@dataclass
class Record:
    """One backend × size × batch result; ``status`` is "ok" or "error" (then ``reason`` says why)."""

    backend: str
    description: str
    size: str
    width: int
    height: int
    batch: int
    network_width: int | None = None
    network_height: int | None = None
    status: str = "ok"
    reason: str | None = None
    precision: str = "float32"
    device: str = "cpu"
    median_ms: float | None = None
    p95_ms: float | None = None
    min_ms: float | None = None
    first_call_ms: float | None = None
    repeats: int = 0
    warmup: int = 0
    clock: str | None = None
    fps: float | None = None
    speedup_vs_torch: float | None = None
    psnr_vs_fp32: float | None = None
    max_abs_diff_vs_fp32: float | None = None
    fidelity_unit: str | None = None
    gflops_per_frame: float | None = None
    achieved_gflops: float | None = None
    peak_gflops: float | None = None
    percent_of_peak: float | None = None
    other_load_cores: float | None = None  # CPU cores other processes kept busy while this was timed
    peak_rss_mib: float | None = None  # the process's peak resident memory from loading to the end of timing
    rss_before_mib: float | None = None  # its resident memory just before loading (torch, the reference, ...)
    details: dict[str, Any] = field(default_factory=dict)
    bench_only: bool = False  # a configuration no runtime backend runs, measured only to compare with


@dataclass
class Loaded:
    """A backend loaded for one frame size, with what its check-frame call told."""

    entry: BackendEntry
    backend: Backend
    clock: Clock
    base: dict[str, Any]
    first_call_ms: float
    output: np.ndarray  # ``enhanced`` on the check frame: the baseline's is the reference
    fidelity: Fidelity | None
    rss_before_mib: float | None = None  # None: peak memory cannot be measured here


def timed_record(item: Loaded, batch: int, timing: Timing | Exception, log: Callable[[str], None]) -> Record:
    """The record of ``item`` at ``batch``: its timing (or the error that stopped it) and its check-frame fidelity."""
    record = Record(**item.base, batch=batch, first_call_ms=item.first_call_ms)
    _set_fidelity(record, item.fidelity, item.entry.name == BASELINE)
    label = f"{record.size:>9} {record.backend:<24} batch {batch}"
    if isinstance(timing, Exception):
        log(f"{label}: error {timing}")
        record.status, record.reason = "error", reason_of(timing)
        return record
    record.median_ms, record.p95_ms, record.min_ms = timing.median_ms, timing.p95_ms, timing.min_ms
    record.repeats, record.warmup, record.clock = timing.repeats, timing.warmup, timing.clock
    record.other_load_cores = timing.other_load_cores
    record.fps = batch * 1000.0 / timing.median_ms
    psnr = "reference" if item.entry.name == BASELINE else _db(record.psnr_vs_fp32)
    log(
        f"{label}: median {timing.median_ms:9.1f} ms, p95 {timing.p95_ms:9.1f} ms ({timing.repeats} repeats), "
        f"PSNR {psnr}, other processes busy: {_cores(record.other_load_cores)}"
    )
    return record


def _set_fidelity(record: Record, fidelity: Fidelity | None, is_baseline: bool) -> None:
    if is_baseline:
        record.max_abs_diff_vs_fp32 = 0.0
        record.details = {**record.details, "fidelity": "reference"}
    elif fidelity is not None:
        record.psnr_vs_fp32 = fidelity.psnr_db
        record.max_abs_diff_vs_fp32 = fidelity.max_abs_diff
        record.fidelity_unit = fidelity.unit
        if fidelity.psnr_db is None:
            record.details = {**record.details, "fidelity": "identical to the reference"}


def fill_derived(records: list[Record], models: dict[str, Any], peaks: list[PeakMeasurement]) -> None:
    """FLOPs, achieved GFLOP/s, % of peak and the speedup over the baseline of the same size and batch."""
    baseline = {(r.size, r.batch): r.median_ms for r in records if r.backend == BASELINE and r.status == "ok"}
    for record in records:
        height, width = record.network_height or record.height, record.network_width or record.width
        record.gflops_per_frame = flops_per_frame(models[record.backend], height, width) / 1e9
        peak = best_peak(peaks, record.device, record.precision)
        record.peak_gflops = peak.gflops if peak is not None else None
        if record.status != "ok" or record.median_ms is None:
            continue
        record.achieved_gflops = record.gflops_per_frame * record.batch / (record.median_ms / 1000.0)
        if record.peak_gflops:
            record.percent_of_peak = 100.0 * record.achieved_gflops / record.peak_gflops
        base = baseline.get((record.size, record.batch))
        if base is not None:
            record.speedup_vs_torch = base / record.median_ms


def precision_of(entry: BackendEntry, backend: Backend) -> str:
    """The entry's precision, or what the backend says it runs in (a TensorRT engine's build precision)."""
    names = {"fp16": "float16", "fp32": "float32", "bf16": "bfloat16"}
    return names.get(backend.details().get("precision"), entry.precision)


#: what of a backend's ``details()`` goes into its records (how it ran; ``network_size`` changes per call)
_RECORDED_DETAILS = ("providers", "precision", "precision_reason", "device", "threads", "openvino")


def details_of(backend: Backend) -> dict[str, Any]:
    """What of ``backend.details()`` a record keeps."""
    details = backend.details()
    return {key: details[key] for key in _RECORDED_DETAILS if details.get(key) is not None}


def _cores(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} cores"


def _db(value: float | None) -> str:
    return "identical" if value is None else f"{value:.1f} dB"


def reason_of(error: BaseException) -> str:
    """An error as one short line for a record or a "not run" list: its type and its message's first line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]
