"""The stream engine: decode, inference and encode in three threads joined by bounded queues.

Each stage overlaps the others (NumPy, OpenCV, ONNX Runtime, TensorRT and the ffmpeg pipes all release the GIL), so
throughput is set by the slowest stage rather than by their sum, and the bounded queues keep memory flat however
long the input. Two policies:

* lossless (files, images): every input frame produces exactly one output frame, in order; a full queue makes the
  decoder wait;
* real-time (``--realtime``, for cameras and streams): the decoder never waits; the inference stage always takes the
  newest frame and frames that went stale meanwhile are dropped (and counted), so latency stays at one frame instead
  of growing without bound.

Ctrl-C or SIGTERM asks for a graceful stop: decoding stops, frames already enhanced are written, and the caller then
finishes the output normally; a second signal aborts at once. The main thread only supervises (and runs the ``--show``
window, which GUI toolkits require on the main thread). At the end :class:`PipelineStats` gives the one-line summary.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from cliplit.core.errors import CliplitError
from cliplit.core.text import plural
from cliplit.runtime.enhancer import Enhancer, Pending
from cliplit.runtime.sources import FrameSource, Item

_END = object()  # end-of-stream marker passed down the queues
_POLL_S = 0.1  # how often blocked threads look at the abort flag


class Interrupted(KeyboardInterrupt):
    """A second stop signal: abort at once; the command exits with 128 + ``signum`` (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Sink(Protocol):
    def write(self, item: Item) -> None: ...


@dataclass
class PipelineStats:
    """What a run did: counts, wall time and the busy time of each stage."""

    unit: str = "frame"
    frames: int = 0
    failed: int = 0
    dropped: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "inference": 0.0, "encode": 0.0})
    #: stopped before the source ended (signal, preview window closed)
    stopped: bool = False
    #: the signal (SIGINT for Ctrl-C, SIGTERM) that stopped the run, or 0
    signal: int = 0

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C or SIGTERM."""
        return self.signal != 0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def rate(self) -> str:
        """Throughput in the unit that reads well: per second when fast, seconds per item when slow."""
        if not self.frames or self.wall_s <= 0:
            return ""
        if self.fps >= 1.0:
            return f" ({self.fps:.1f} {self.unit}s/s)"
        return f" ({self.wall_s / self.frames:.2f} s per {self.unit})"

    def mean_ms(self, stage: str) -> float:
        done = self.frames + self.failed
        return 1000.0 * self.stage_s[stage] / done if done else 0.0

    def summary(self) -> str:
        stages = ", ".join(f"{stage} {self.mean_ms(stage):.1f}" for stage in self.stage_s)
        line = (
            f"{plural(self.frames, self.unit)} in {self.wall_s:.2f} s{self.rate()}; mean ms per {self.unit}: {stages}"
        )
        if self.failed:
            line += f"; {self.failed} failed"
        if self.dropped:
            line += f"; {plural(self.dropped, 'stale frame')} dropped"
        if self.interrupted:
            line += f"; interrupted by {signal.Signals(self.signal).name}"
        elif self.stopped:
            line += "; stopped early"
        return line


class Pipeline:
    """Runs ``source`` → ``enhancer`` → ``sink`` once; see the module docstring for the policies.

    ``batch_size`` frames of one size go through the network together (what is already decoded, never waiting for
    more); ``in_flight`` batches are kept submitted at once where the backend runs asynchronously (ONNX Runtime,
    OpenVINO, TensorRT).
    ``tolerate_errors`` (image batches) records an unreadable or too small input as a failed item and carries on;
    otherwise any error aborts the run. ``preview`` is called on the main thread with the newest output frame and
    returns False to stop.
    """

    def __init__(
        self,
        source: FrameSource,
        enhancer: Enhancer,
        sink: Sink,
        *,
        realtime: bool = False,
        batch_size: int = 1,
        in_flight: int = 2,
        queue_size: int = 8,
        max_frames: int | None = None,
        tolerate_errors: bool = False,
        progress: bool = True,
        preview: Callable[[np.ndarray], bool] | None = None,
    ) -> None:
        if batch_size < 1 or in_flight < 1:
            raise CliplitError("--batch and in-flight counts must be at least 1")
        self.source, self.enhancer, self.sink = source, enhancer, sink
        self.realtime = realtime
        self.batch_size = batch_size
        self.in_flight = in_flight
        self.max_frames = max_frames
        self.tolerate_errors = tolerate_errors
        self.progress = progress
        self.preview = preview
        # Real time: room for only the newest decoded frame; anything older is stale by the time it would run.
        self._decoded: queue.Queue = queue.Queue(1 if realtime else queue_size)
        self._enhanced: queue.Queue = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._latest: np.ndarray | None = None
        self._bar: tqdm | None = None
        self.stats = PipelineStats(unit="image" if tolerate_errors else "frame")

    def stop(self) -> None:
        """Ask for a graceful stop (thread-safe): no more decoding, frames in flight are still written."""
        self._stop.set()

    def run(self) -> PipelineStats:
        """Run to the end of the source (or a stop request) and return the statistics; re-raises stage errors."""
        workers = [
            threading.Thread(target=self._guard, args=(self._decode,), name="cliplit-decode", daemon=True),
            threading.Thread(target=self._guard, args=(self._infer,), name="cliplit-inference", daemon=True),
            threading.Thread(target=self._guard, args=(self._encode,), name="cliplit-encode", daemon=True),
        ]
        self._bar = tqdm(
            total=self.source.total, unit=f" {self.stats.unit}s", disable=not self.progress, dynamic_ncols=True
        )
        owner_on_tile = self.enhancer.on_tile
        if self.progress:
            self.enhancer.on_tile = self._show_tiles
        start = time.perf_counter()
        try:
            with self._signals_stop_gracefully():
                for worker in workers:
                    worker.start()
                self._supervise(workers)
        except BaseException:  # the second Ctrl-C, or the preview window failing: abort every stage, then re-raise
            self._abort.set()
            for worker in workers:
                worker.join()
            raise
        finally:
            self.stats.wall_s = time.perf_counter() - start
            self.enhancer.on_tile = owner_on_tile
            self._bar.close()
        if self._error is not None:
            raise self._error
        self.stats.stopped = self._stop.is_set()
        return self.stats

    def _show_tiles(self, done: int, total: int) -> None:
        """A frame running in tiles, on the bar as "tiles 7/48" (the inference thread calls it, tqdm locks): the
        bar counts written frames, and one large photo in tiles takes minutes in which the count alone stands still.
        Cleared with the frame's last tile, so an untiled frame after it shows no stale count."""
        if self._bar is not None:
            self._bar.set_postfix_str(f"tiles {done}/{total}" if done < total else "")

    def _supervise(self, workers: list[threading.Thread]) -> None:
        shown = None
        while alive := [worker for worker in workers if worker.is_alive()]:
            latest = self._latest
            if self.preview is not None and latest is not None and latest is not shown:
                shown = latest
                if not self.preview(latest):
                    self.stop()
            alive[0].join(0.01 if self.preview is not None else _POLL_S)

    def _guard(self, stage: Callable[[], None]) -> None:
        """Run a stage; the first error anywhere aborts all stages and is re-raised by :meth:`run`."""
        try:
            stage()
        except BaseException as error:  # handed to the main thread, which re-raises it
            if self._error is None:
                self._error = error
            self._abort.set()

    def _decode(self) -> None:
        items: Iterator[Item] = self.source.items()
        count = 0
        try:
            while not self._stop.is_set() and not self._abort.is_set():
                started = time.perf_counter()
                item = next(items, None)
                if item is None:
                    break
                self.stats.stage_s["decode"] += time.perf_counter() - started
                if self.realtime:
                    self._put_newest(item)
                elif not self._put(self._decoded, item):
                    return
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    break
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        self._put(self._decoded, _END)

    def _infer(self) -> None:
        pending: deque[tuple[list[Item], list[Item], list[Pending], float]] = deque()
        ended = False
        while not ended:
            batch, ended = self._next_batch()
            if batch is None:
                return
            if not batch or self._stop.is_set():  # after a stop request, frames not yet started are discarded
                continue
            if self.tolerate_errors:
                self._infer_each(batch)
                if not self._forward(batch):
                    return
                continue
            started = time.perf_counter()
            good = [item for item in batch if item.error is None]
            submitted = self.enhancer.submit([item.image for item in good])
            pending.append((batch, good, submitted, time.perf_counter() - started))
            if len(pending) >= self.in_flight and not self._collect(*pending.popleft()):
                return
        while pending:
            if not self._collect(*pending.popleft()):
                return
        self._put(self._enhanced, _END)

    def _next_batch(self) -> tuple[list[Item] | None, bool]:
        """Up to ``batch_size`` decoded items (waiting only for the first) and whether the source has ended."""
        first = self._get(self._decoded)
        if first is None:
            return None, True
        if first is _END:
            return [], True
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                item = self._decoded.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                return batch, True
            batch.append(item)
        return batch, False

    def _collect(self, batch: list[Item], good: list[Item], submitted: list[Pending], busy: float) -> bool:
        started = time.perf_counter()
        for item, enhanced in zip(good, self.enhancer.collect(submitted), strict=True):
            item.image = enhanced
        self.stats.stage_s["inference"] += busy + time.perf_counter() - started
        return self._forward(batch)

    def _infer_each(self, batch: list[Item]) -> None:
        for item in batch:
            if item.error is not None:
                continue
            started = time.perf_counter()
            try:
                item.image = self.enhancer.enhance(item.image)
            except CliplitError as error:
                item.image, item.error = None, f"{item.name}: {error}"
            self.stats.stage_s["inference"] += time.perf_counter() - started

    def _forward(self, batch: list[Item]) -> bool:
        return all(self._put(self._enhanced, item) for item in batch)

    def _encode(self) -> None:
        while True:
            item = self._get(self._enhanced)
            if item is None or item is _END:
                return
            started = time.perf_counter()
            self.sink.write(item)
            self.stats.stage_s["encode"] += time.perf_counter() - started
            if item.error is None:
                self.stats.frames += 1
                self._latest = item.image
            else:
                self.stats.failed += 1
            self._bar.update(1)

    def _get(self, source: queue.Queue) -> object | None:
        """The next queue entry, or None once the run is aborted."""
        while not self._abort.is_set():
            try:
                return source.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _put(self, target: queue.Queue, entry: object) -> bool:
        """Put ``entry``, waiting for room; False once the run is aborted."""
        while not self._abort.is_set():
            try:
                target.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _put_newest(self, item: Item) -> None:
        """Real-time policy: replace a frame still waiting for inference (it is stale now) by ``item``."""
        while True:
            try:
                self._decoded.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._decoded.get_nowait()
                    self.stats.dropped += 1
                except queue.Empty:
                    continue

    @contextmanager
    def _signals_stop_gracefully(self) -> Iterator[None]:
        """SIGINT/SIGTERM → graceful stop; a second one → KeyboardInterrupt (abort). Main thread only."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: object) -> None:
            if self._stop.is_set():
                raise Interrupted(signum)
            self.stats.signal = signum
            self.stop()
            if signum == signal.SIGINT:
                print("\nstopping: finishing the output (press Ctrl-C again to abort)", file=sys.stderr)
            else:
                name = signal.Signals(signum).name
                print(f"\nstopping on {name}: finishing the output (a second {name} aborts)", file=sys.stderr)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
