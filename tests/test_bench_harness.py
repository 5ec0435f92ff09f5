"""The timing harness: call counts, fresh inputs, the repeat budget, statistics, clocks, input generation, sizes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cliplit.benchmarks.harness import (
    CudaEventClock,
    HostClock,
    Timing,
    Workload,
    measure,
    measure_interleaved,
    time_once,
)
from cliplit.benchmarks.workloads import parse_positive_ints, parse_scales, parse_size, parse_sizes
from cliplit.core.contract import random_model_input
from cliplit.core.errors import CliplitError


class ScriptedClock:
    """A clock whose readings are given in advance, so statistics can be checked exactly."""

    name = "scripted"

    def __init__(self, readings_ms: list[float]) -> None:
        self.readings = list(readings_ms)
        self.running = False

    def start(self) -> None:
        assert not self.running, "start() twice without stop()"
        self.running = True

    def stop(self) -> float:
        assert self.running, "stop() without start()"
        self.running = False
        return self.readings.pop(0)


def test_warmup_is_untimed_and_every_call_gets_a_fresh_input():
    seen: list[int] = []
    counter = iter(range(1000))
    timing = measure(
        lambda x: seen.append(x), lambda: next(counter), warmup=3, repeats=5, clock=ScriptedClock([1.0] * 5)
    )
    assert seen == list(range(8)), "3 warm-up calls then 5 timed calls, each on a new input"
    assert timing.repeats == 5 and timing.warmup == 3 and timing.clock == "scripted"


def test_median_p95_and_min_of_the_samples():
    samples = [float(v) for v in range(20, 0, -1)]  # 20 .. 1 ms, in a shuffled order of arrival
    timing = measure(lambda _: None, lambda: 0, warmup=0, repeats=20, clock=ScriptedClock(samples))
    assert timing.median_ms == 10.5
    assert timing.p95_ms == pytest.approx(19.05)  # linear interpolation at rank 0.95 · 19 = 18.05
    assert timing.min_ms == 1.0


def test_budget_stops_repeats_but_keeps_at_least_two():
    slow = measure(lambda _: None, lambda: 0, warmup=0, repeats=10, clock=ScriptedClock([5000.0] * 10), budget_s=1)
    assert slow.repeats == 2
    fast = measure(lambda _: None, lambda: 0, warmup=0, repeats=10, clock=ScriptedClock([300.0] * 10), budget_s=1)
    assert fast.repeats == 4  # 4 × 300 ms is the first total reaching 1 s


def test_interleaved_workloads_take_turns_and_a_failing_one_leaves_the_rotation():
    calls: list[str] = []

    def runner(name: str, fail_on: int | None = None):
        def run(_batch: object) -> None:
            calls.append(name)
            if fail_on is not None and calls.count(name) == fail_on:
                raise RuntimeError(f"{name} broke")

        return run

    workloads = {
        "a": Workload(runner("a"), lambda: 0, ScriptedClock([1.0] * 4)),
        "b": Workload(runner("b", fail_on=3), lambda: 0, ScriptedClock([2.0] * 4)),
        "c": Workload(runner("c"), lambda: 0, ScriptedClock([3.0] * 4)),
    }
    results = measure_interleaved(workloads, warmup=1, repeats=3)
    # warm-up of each, then rounds a, b, c; b fails in round 2 and drops out
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "c"]
    assert results["a"].samples_ms == [1.0, 1.0, 1.0] and results["c"].samples_ms == [3.0, 3.0, 3.0]
    assert isinstance(results["b"], RuntimeError) and str(results["b"]) == "b broke"


def test_short_calls_are_rewarmed_before_each_timed_call_long_ones_are_not():
    calls: list[str] = []
    workloads = {
        "short": Workload(lambda _: calls.append("short"), lambda: 0, ScriptedClock([10.0] * 3)),
        "long": Workload(lambda _: calls.append("long"), lambda: 0, ScriptedClock([900.0] * 3)),
    }
    results = measure_interleaved(workloads, warmup=0, repeats=3, rewarm_below_ms=250)
    # round 1 has no previous sample to judge by; afterwards "short" gets an untimed call before its timed one
    assert calls == ["short", "long", "short", "short", "long", "short", "short", "long"]
    assert results["short"].repeats == 3 and results["long"].repeats == 3


def test_load_meter_readings_are_averaged_by_call_duration():
    class Meter:
        readings = iter([0.0, 2.0])

        def start(self) -> None:
            pass

        def stop(self) -> float:
            return next(self.readings)

    workloads = {"x": Workload(lambda _: None, lambda: 0, ScriptedClock([1.0, 3.0]))}
    timing = measure_interleaved(workloads, warmup=0, repeats=2, load_meter=Meter())["x"]
    assert timing.other_load_cores == pytest.approx((0.0 * 1.0 + 2.0 * 3.0) / 4.0)
    assert measure(lambda _: None, lambda: 0, warmup=0, repeats=1, clock=HostClock()).other_load_cores is None


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        measure(lambda _: None, lambda: 0, warmup=0, repeats=0, clock=HostClock())
    with pytest.raises(ValueError):
        measure(lambda _: None, lambda: 0, warmup=-1, repeats=1, clock=HostClock())


def test_time_once_returns_the_result_and_host_clock_synchronises_around_the_call():
    events: list[str] = []
    clock = HostClock(synchronize=lambda: events.append("sync"))
    result, elapsed = time_once(lambda x: events.append("run") or time.sleep(0.02) or x * 2, 21, clock)
    assert result == 42 and 20.0 <= elapsed < 2000.0, "milliseconds of the call, the 20 ms sleep included"
    assert events == ["sync", "run", "sync"], "the device must be idle before the start and after the end"
    assert clock.name == "perf_counter+device_sync" and HostClock().name == "perf_counter"


def test_cuda_event_clock_records_on_the_stream_and_waits_for_the_end(monkeypatch):
    torch = pytest.importorskip("torch")
    log: list[str] = []

    class FakeEvent:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.label = "begin" if not any(e.startswith("new") for e in log) else "end"
            log.append(f"new {self.label}")

        def record(self) -> None:
            log.append(f"record {self.label}")

        def synchronize(self) -> None:
            log.append(f"synchronize {self.label}")

        def elapsed_time(self, other: FakeEvent) -> float:
            log.append(f"elapsed {self.label}->{other.label}")
            return 12.5

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: log.append("device sync"))
    clock = CudaEventClock()
    clock.start()
    log.append("work")
    assert clock.stop() == 12.5
    assert log == [
        "new begin",
        "new end",
        "device sync",
        "record begin",
        "work",
        "record end",
        "synchronize end",
        "elapsed begin->end",
    ]


@pytest.mark.parametrize("io", ["float", "uint8"])
def test_random_model_inputs_are_fresh_full_range_noise(io):
    rng = np.random.default_rng(0)
    first, second = random_model_input(io, 2, 8, 12, rng), random_model_input(io, 2, 8, 12, rng)
    expected = (2, 3, 8, 12) if io == "float" else (2, 8, 12, 3)
    assert first.shape == expected and first.dtype == (np.float32 if io == "float" else np.uint8)
    assert not np.array_equal(first, second)
    assert first.max() > 0.5 * (1 if io == "float" else 255) and np.count_nonzero(first) > first.size // 2
    with pytest.raises(ValueError):
        random_model_input("rgb", 1, 8, 8, rng)


def test_timing_statistics_on_one_sample():
    timing = Timing(samples_ms=[7.0], warmup=0, clock="x")
    assert (timing.median_ms, timing.p95_ms, timing.min_ms, timing.repeats) == (7.0, 7.0, 7.0, 1)


def test_sizes_are_width_by_height_and_presets_resolve():
    assert (parse_size("720p").width, parse_size("720p").height) == (1280, 720)
    assert (parse_size("4K").width, parse_size("4k").height) == (3840, 2160)
    custom = parse_size("640x360")
    assert (custom.width, custom.height, custom.label) == (640, 360, "640x360")
    assert [s.label for s in parse_sizes("1080p, 480p,480p")] == ["480p", "1080p"]
    for bad in ("720", "1x100", "big", ""):
        with pytest.raises(CliplitError):
            parse_sizes(bad) if bad == "" else parse_size(bad)


def test_batches_and_scales_are_validated():
    assert parse_positive_ints("4,1,4", "--batch") == [1, 4]
    assert parse_scales("0.25,1,0.5") == [1.0, 0.5, 0.25]
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(CliplitError, match="--batch"):
            parse_positive_ints(bad, "--batch")
    for bad in ("0", "1.5", "half", ""):
        with pytest.raises(CliplitError, match="--scale"):
            parse_scales(bad)
