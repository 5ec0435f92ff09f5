"""Timing one callable the way a benchmark must: warm-up, many repeats, fresh inputs, robust statistics.

Why each rule: the first calls pay for lazy initialisation (memory pools, kernel selection, compilation), so the
caller times the first call on its own and the warm-up calls are not timed; every repeat gets a new random input, so
no cache or shortcut can serve a repeated or all-zero frame; the median and the 95th percentile describe a
distribution that other processes skew, where a mean would be dragged by one stall. On a GPU, work is asynchronous:
a clock read on the host while kernels are still queued measures nothing, so GPU timings use CUDA events or
synchronise before reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")


class Clock(Protocol):
    """Measures the time between ``start()`` and ``stop()`` in milliseconds."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> float: ...


class HostClock:
    """``time.perf_counter``, optionally calling ``synchronize`` before both readings (e.g. a CUDA device sync)."""

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self._synchronize = synchronize
        self._start = 0.0
        self.name = "perf_counter" if synchronize is None else "perf_counter+device_sync"

    def start(self) -> None:
        if self._synchronize is not None:
            self._synchronize()
        self._start = time.perf_counter()

    def stop(self) -> float:
        if self._synchronize is not None:
            self._synchronize()
        return (time.perf_counter() - self._start) * 1000.0


class CudaEventClock:
    """CUDA events recorded on the current stream: the GPU's own timestamps, not the host's view of them."""

    name = "cuda_events"

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._begin = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._torch.cuda.synchronize()  # nothing queued before the run may be billed to it
        self._begin.record()

    def stop(self) -> float:
        self._end.record()
        self._end.synchronize()
        return float(self._begin.elapsed_time(self._end))


class LoadMeter(Protocol):
    """Measures how busy other processes kept the machine between ``start()`` and ``stop()`` (cores, or None)."""

    def start(self) -> None: ...

    def stop(self) -> float | None: ...


@dataclass
class Workload:
    """One thing to time: the call, where its fresh inputs come from (never timed), and the clock that times it."""

    run: Callable[[Any], object]
    make_input: Callable[[], Any]
    clock: Clock


@dataclass
class Timing:
    """The timed repeats of one workload, in milliseconds, and how they were taken."""

    samples_ms: list[float]
    warmup: int
    clock: str
    #: mean number of CPU cores other processes kept busy during the timed calls (None: not measured)
    other_load_cores: float | None = None

    @property
    def repeats(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 95))

    @property
    def min_ms(self) -> float:
        return float(min(self.samples_ms))


def time_once(run: Callable[[Any], T], argument: Any, clock: Clock) -> tuple[T, float]:
    """Run ``run(argument)`` once under ``clock``; return its result and the milliseconds it took."""
    clock.start()
    result = run(argument)
    return result, clock.stop()


def measure_interleaved(
    workloads: dict[str, Workload],
    *,
    warmup: int,
    repeats: int,
    budget_s: float | None = None,
    load_meter: LoadMeter | None = None,
    rewarm_below_ms: float | None = None,
) -> dict[str, Timing | Exception]:
    """Time several workloads in rounds, one call of each per round, so that a change in the machine's load (other
    jobs starting or ending on a shared machine) hits all of them alike instead of whichever ran at the time.

    Each workload gets ``warmup`` untimed calls, then up to ``repeats`` timed ones, each on a fresh input; with
    ``budget_s`` a workload stops once its timed calls add up to that long, after at least two, so a slow backend
    at a large size cannot hold a run hostage (``Timing.repeats`` says how many were taken). A workload that raises
    leaves the rotation with its exception as its result; the others go on.

    Interleaving has a cost for short calls: the previous workload has evicted this one's data from the caches and
    its threads have gone to sleep. With ``rewarm_below_ms``, a workload whose last call took less than that gets
    one untimed call right before each timed one, as it would in a loop of its own; long calls do not notice.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    results: dict[str, Timing | Exception] = {}
    samples: dict[str, list[float]] = {name: [] for name in workloads}
    loads: dict[str, list[float | None]] = {name: [] for name in workloads}
    for name, workload in workloads.items():
        try:
            for _ in range(warmup):
                workload.run(workload.make_input())
        except Exception as error:  # the workload's result, not the run's end
            results[name] = error
    for _ in range(repeats):
        active = [name for name in workloads if name not in results and not _spent(samples[name], budget_s)]
        if not active:
            break
        for name in active:
            try:
                _timed_call(workloads[name], samples[name], loads[name], load_meter, rewarm_below_ms)
            except Exception as error:  # the workload leaves the rotation with its error as its result
                results[name] = error
    for name, workload in workloads.items():
        if name not in results:
            load = _weighted_mean(loads[name], samples[name])
            results[name] = Timing(samples[name], warmup, workload.clock.name, load)
    return results


def _timed_call(
    workload: Workload,
    samples: list[float],
    loads: list[float | None],
    load_meter: LoadMeter | None,
    rewarm_below_ms: float | None,
) -> None:
    """One timed call on a fresh input (after an untimed re-warming call if the last one was short), appending its
    time to ``samples`` and the other processes' load during it to ``loads``."""
    batch = workload.make_input()
    if rewarm_below_ms is not None and samples and samples[-1] < rewarm_below_ms:
        workload.run(workload.make_input())
    if load_meter is not None:
        load_meter.start()
    try:
        samples.append(time_once(workload.run, batch, workload.clock)[1])
    finally:
        loads.append(load_meter.stop() if load_meter is not None else None)


def measure(
    run: Callable[[Any], object],
    make_input: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    clock: Clock,
    budget_s: float | None = None,
) -> Timing:
    """``measure_interleaved`` for a single workload; its exception, if any, is raised."""
    result = measure_interleaved(
        {"": Workload(run, make_input, clock)}, warmup=warmup, repeats=repeats, budget_s=budget_s
    )[""]
    if isinstance(result, Exception):
        raise result
    return result


def _spent(samples: list[float], budget_s: float | None) -> bool:
    return budget_s is not None and len(samples) >= 2 and sum(samples) >= budget_s * 1000.0


def _weighted_mean(values: list[float | None], weights: list[float]) -> float | None:
    """Mean of ``values`` weighted by the matching ``weights`` (None if any value is unknown)."""
    known = [(v, w) for v, w in zip(values, weights, strict=False) if v is not None]
    if not known or len(known) != len(values) or sum(w for _, w in known) <= 0:
        return None
    return sum(v * w for v, w in known) / sum(w for _, w in known)
