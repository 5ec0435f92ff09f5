"""One benchmark run: every backend × frame size × batch, against the PyTorch baseline measured in the same run.

For each frame size the baseline runs first: its output on the shared check frame is the FP32 reference every other
backend's output is compared with, and its median latency is what speedups divide. Each backend is loaded fresh for
each size (so ``torch.compile`` compiles static shapes and a failure at 4K does not poison 720p), runs the check
frame (timed alone as ``first_call_ms``: loading, kernel selection, compilation), then ``warmup`` untimed calls and
the timed repeats per batch size, each on fresh random input. A backend that cannot run here becomes a ``skipped``
entry with its reason; one that fails at a size becomes an ``error`` record; the rest of the run goes on. Each
record carries the process's peak resident memory from the backend's loading to the end of its timing. With
``reference_dir``, every backend but the baseline then also runs the real photos there against their official
outputs (``cliplit.benchmarks.photos``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cliplit.benchmarks.fidelity import check_frame, compare
from cliplit.benchmarks.flops import flops_per_pixel
from cliplit.benchmarks.harness import Clock, CudaEventClock, HostClock, Workload, measure_interleaved, time_once
from cliplit.benchmarks.machine import OtherLoad, load_snapshot, machine_info, memory_low, peak_rss_mib, reset_peak_rss
from cliplit.benchmarks.peak import PeakMeasurement, measure_peaks
from cliplit.benchmarks.photos import measure_photos, reference_photos
from cliplit.benchmarks.records import (
    Loaded,
    Record,
    details_of,
    fill_derived,
    precision_of,
    reason_of,
    timed_record,
)
from cliplit.benchmarks.registry import (
    BACKENDS,
    BASELINE,
    SCALE_BASES,
    BackendEntry,
    BackendUnavailable,
    BenchContext,
    scaled_entries,
)
from cliplit.benchmarks.workloads import FrameSize
from cliplit.core.contract import model_input_from_bgr, random_model_input
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.base import Backend

SCHEMA = "cliplit-bench/1"
# Calls shorter than this get an untimed call of their own just before each timed one (see measure_interleaved):
# measured on the 2-core CPU, a 50 ms call timed right after other backends took 10-40 % longer.
REWARM_BELOW_MS = 250.0


@dataclass
class SuiteConfig:
    """Everything that decides what a run measures (recorded verbatim in results.json)."""

    backends: list[str]
    sizes: list[FrameSize]
    batches: list[int] = field(default_factory=lambda: [1])
    scales: list[float] = field(default_factory=list)
    upsample: str = "bilinear"
    warmup: int = 1
    repeats: int = 10
    budget_s: float | None = None
    weights: str = "clip-lit"
    engine: Path | None = None
    threads: int | None = None
    peak_n: int = 4096
    seed: int = 0
    video: bool = False
    video_size: FrameSize | None = None
    video_frames: int = 60
    video_photos: Path | None = None
    video_rounds: int = 2
    video_teacher_frames: int = 15
    interleave: bool = False
    reference_dir: Path | None = None


def resolve_backends(names: list[str], scales: list[float], upsample: str) -> list[BackendEntry]:
    """The requested backends in order, the baseline first (always: speedups and fidelity need it), then the
    ``--scale`` modes of the requested runtime backends."""
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise CliplitError(f"unknown backend(s) {', '.join(unknown)}; expected some of {', '.join(BACKENDS)}")
    ordered = [BASELINE, *(name for name in dict.fromkeys(names) if name != BASELINE)]
    scaled = scaled_entries(ordered, scales, upsample)
    if scales and not scaled:
        raise CliplitError(f"--scale needs one of the runtime backends {', '.join(SCALE_BASES)} in --backends")
    return [BACKENDS[name] for name in ordered] + scaled


def run_suite(config: SuiteConfig, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the whole benchmark and return the results document (see ``SCHEMA``; written by ``report``)."""
    log = log or _stderr
    entries = resolve_backends(config.backends, config.scales, config.upsample)
    try:
        import torch

        from cliplit.train.checkpoint import load_enhancer
    except ImportError as error:
        raise CliplitError(
            f"cliplit bench needs PyTorch for the baseline and the reference ({error}); "
            "install it with pip install 'cliplit[export,bench]'"
        ) from error

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_enhancer(config.weights).model
    started = time.time()
    machine = machine_info()
    machine["load_at_start"] = load_snapshot()
    photos = reference_photos(config.reference_dir) if config.reference_dir is not None else []
    log("measuring the matrix-product peak ...")
    peaks = measure_peaks(
        cpu_n=config.peak_n,
        openvino={e.precision for e in entries if e.runtime is not None and e.runtime.backend == "openvino"},
    )
    for peak in peaks:
        log(f"  {peak.implementation} {peak.device} {peak.dtype}: " + _peak_text(peak))
    records: list[Record] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="cliplit-bench-") as workdir:
        context = BenchContext(config.weights, device, config.engine, config.threads)
        rng = np.random.default_rng(config.seed)
        for size in config.sizes:
            records += _run_size(entries, size, config, context, skipped, rng, log)
        videos = _run_videos(config, Path(workdir), log) if config.video else []
    photo_results = [
        measure_photos(entry.name, lambda entry=entry: entry.build(context), photos, log)
        for entry in entries
        if photos and entry.name != BASELINE and not _skipped(entry, skipped)
    ]
    machine["load_at_end"] = load_snapshot()
    fill_derived(records, _models_by_backend(entries, config.weights, model), peaks)
    return {
        "schema": SCHEMA,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "config": _config_dict(config),
        "machine": machine,
        "peak": [peak.to_dict() for peak in peaks],
        "flops_per_pixel": flops_per_pixel(model),
        "records": [asdict(record) for record in records],
        "skipped": [{"backend": name, "reason": reason} for name, reason in skipped.items()],
        "video": videos,
        "photos": photo_results,
    }


def _run_size(
    entries: list[BackendEntry],
    size: FrameSize,
    config: SuiteConfig,
    context: BenchContext,
    skipped: dict[str, str],
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> list[Record]:
    """Load the backends for ``size`` one by one, run the check frame on each, and time them per batch size: each
    on its own (the default), or with ``config.interleave`` all together round by round, in groups that are timed
    and closed early when memory runs low.

    Interleaving makes load drift on a shared machine hit every backend alike, but keeps every backend resident:
    on the 2-core CPU that slowed eager PyTorch at 1080p from 11.8 s alone to 19.2 s (large fresh allocations
    next to ONNX Runtime's arenas), which would have inflated every speedup. Timing alone is what a deployment sees.
    """
    records: list[Record] = []
    reference: np.ndarray | None = None
    group: list[Loaded] = []
    with ExitStack() as stack:
        for entry in entries:
            if _skipped(entry, skipped):
                continue
            rss_before = reset_peak_rss()
            try:
                backend = stack.enter_context(entry.build(context))
            except Exception as error:  # unavailable here, or failing to load: reported, and the run goes on
                skipped[entry.name] = str(error) if isinstance(error, BackendUnavailable) else reason_of(error)
                log(f"skip {entry.name}: {skipped[entry.name]}")
                continue
            item = _check(entry, backend, size, context, reference, config.batches, records, log)
            if item is not None:
                item.rss_before_mib = rss_before
                group.append(item)
                reference = item.output if entry.name == BASELINE else reference
            low = memory_low()
            if group and (low or not config.interleave):
                if low and config.interleave:
                    log(f"memory is low: timing {', '.join(i.entry.name for i in group)} before loading more")
                records += _time_group(group, size, config, rng, log)
                stack.close()
                group = []
        records += _time_group(group, size, config, rng, log)
    return records


def _skipped(entry: BackendEntry, skipped: dict[str, str]) -> bool:
    """Whether ``entry`` (or the backend a ``--scale`` mode wraps) could not run here."""
    return entry.name in skipped or entry.name.split("@", 1)[0] in skipped


def _time_group(
    group: list[Loaded], size: FrameSize, config: SuiteConfig, rng: np.random.Generator, log: Callable[[str], None]
) -> list[Record]:
    """Time the loaded backends of ``group`` interleaved, for each batch size; one record each."""
    records = []
    for batch in config.batches:
        workloads = {
            item.entry.name: Workload(
                item.backend.run,
                lambda item=item, batch=batch: random_model_input(item.backend.io, batch, size.height, size.width, rng),
                item.clock,
            )
            for item in group
        }
        # The check frame warmed every backend up at batch 1 only; a new batch shape needs its own first call
        # (torch.compile recompiles, ONNX Runtime plans memory) before any timing.
        warmup = config.warmup if batch == 1 else max(1, config.warmup)
        timings = measure_interleaved(
            workloads,
            warmup=warmup,
            repeats=config.repeats,
            budget_s=config.budget_s,
            load_meter=OtherLoad(),
            rewarm_below_ms=REWARM_BELOW_MS if len(group) > 1 else None,  # alone, the previous call warmed it
        )
        for item in group:  # with several backends timed together, the peak covers all of them
            record = timed_record(item, batch, timings[item.entry.name], log)
            record.details = {**record.details, "timed_with": [i.entry.name for i in group if i is not item]}
            if item.rss_before_mib is not None:
                record.peak_rss_mib, record.rss_before_mib = peak_rss_mib(item.rss_before_mib), item.rss_before_mib
            records.append(record)
    return records


def _check(
    entry: BackendEntry,
    backend: Backend,
    size: FrameSize,
    context: BenchContext,
    reference: np.ndarray | None,
    batches: list[int],
    records: list[Record],
    log: Callable[[str], None],
) -> Loaded | None:
    """The first call, on the shared check frame: its time, its fidelity; None (and error records) if it fails."""
    peak_device = entry.peak_device(context)
    clock = _clock_for(entry, peak_device)
    base: dict[str, Any] = {
        "backend": entry.name,
        "description": entry.description,
        "size": size.label,
        "width": size.width,
        "height": size.height,
        "precision": precision_of(entry, backend),
        "device": peak_device,
        "details": details_of(backend),
        "bench_only": entry.bench_only,
    }
    check = model_input_from_bgr(backend.io, check_frame(size.height, size.width))
    try:
        outputs, first_ms = time_once(backend.run, check, clock)
    except Exception as error:  # any failure (out of memory, compiler error) is this record's result, not the run's
        log(f"error {entry.name} {size.label}: {error}")
        records += [Record(**base, batch=b, status="error", reason=reason_of(error)) for b in batches]
        return None
    network_height, network_width = backend.details().get("network_size") or (size.height, size.width)
    base.update(network_width=network_width, network_height=network_height)
    output = outputs["enhanced"]
    fidelity = compare(output, reference) if reference is not None and entry.name != BASELINE else None
    return Loaded(entry, backend, clock, base, first_ms, output, fidelity)


def _models_by_backend(entries: list[BackendEntry], weights: str, model: Any) -> dict[str, Any]:
    """The network each entry runs (``model``, loaded from ``weights``, unless the entry names its own), so that
    every row's FLOPs and GFLOP/s are those of what it ran: the student's rows are not billed the teacher's FLOPs."""
    from cliplit.train.checkpoint import load_enhancer

    own = {e.weights for e in entries if e.weights is not None and e.weights != weights}
    loaded = {name: load_enhancer(name).model for name in own} | {weights: model}
    return {e.name: loaded[e.weights or weights] for e in entries}


def _clock_for(entry: BackendEntry, device: str) -> Clock:
    """CUDA events for PyTorch on the GPU (its stream is torch's), a device-synchronised host clock otherwise."""
    if device != "cuda":
        return HostClock()
    import torch

    if entry.runs_on == "torch":
        return CudaEventClock()
    return HostClock(synchronize=torch.cuda.synchronize)


def _run_videos(config: SuiteConfig, workdir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The video rows (``cliplit.benchmarks.video``): clip-lit-rt, and the teacher on a shorter clip, each through
    the runtime pipeline beside ffmpeg alone on a pan over ``video_photos``, at ``video_size`` (default: the first
    size)."""
    from cliplit.benchmarks.video import CLIP_FPS, pan_photos, run_video_bench

    assert config.video_photos is not None  # BenchSettings refuses --video without it
    rows = run_video_bench(
        [config.video_size or config.sizes[0]],
        pan_photos(config.video_photos),
        workdir,
        seconds=config.video_frames / CLIP_FPS,
        rounds=config.video_rounds,
        teacher_seconds=config.video_teacher_frames / CLIP_FPS,
        whole_rounds=0,
        log=log,
    )
    return list(rows)


def _config_dict(config: SuiteConfig) -> dict[str, Any]:
    data = asdict(config)
    data["sizes"] = [{"label": s.label, "width": s.width, "height": s.height} for s in config.sizes]
    data["engine"] = str(config.engine) if config.engine is not None else None
    data["reference_dir"] = str(config.reference_dir) if config.reference_dir is not None else None
    data["video_photos"] = str(config.video_photos) if config.video_photos is not None else None
    return data


def _peak_text(peak: PeakMeasurement) -> str:
    return f"{peak.gflops:.1f} GFLOP/s (n={peak.n})" if peak.error is None else f"not measured ({peak.error})"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
