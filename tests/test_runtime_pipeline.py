"""The threaded pipeline (lossless and real-time policies, stops, errors) and live sources (reconnection, http)."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_helpers import decode_all, moving_crops, probe, write_clip

from cliplit.core.errors import CliplitError
from cliplit.core.metrics import psnr
from cliplit.runtime.backends.base import Backend
from cliplit.runtime.cli import main
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.pipeline import Pipeline, PipelineStats
from cliplit.runtime.sources import CaptureSource, FrameSource, Item


class Passthrough(Backend):
    """A float-I/O backend that returns its input (L = 1) after ``delay`` seconds: a slow network, exactly."""

    name = "passthrough"

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__("float")
        self.delay = delay

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(self.delay)
        n, _, h, w = batch.shape
        return {"enhanced": batch, "light_map": np.ones((n, 1, h, w), np.float32)}


class Numbered(FrameSource):
    """``count`` frames whose pixels hold their index, one every ``interval`` seconds (a camera, when live)."""

    def __init__(self, count: int, interval: float = 0.0, *, live: bool = False, fail_at: int | None = None) -> None:
        self.count, self.interval, self.live, self.fail_at = count, interval, live, fail_at
        self.total = count

    def items(self) -> Iterator[Item]:
        for index in range(self.count):
            if index == self.fail_at:
                raise CliplitError("the source broke")
            time.sleep(self.interval)
            yield Item(index, np.full((8, 12, 3), index, np.uint8))


class Collect:
    def __init__(self, fail_at: int | None = None, then: Callable[[int], object] | None = None) -> None:
        self.items: list[Item] = []
        self.fail_at, self.then = fail_at, then

    def write(self, item: Item) -> None:
        if len(self.items) == self.fail_at:
            raise CliplitError("the disk broke")
        self.items.append(item)
        if self.then is not None:
            self.then(len(self.items))


def run(source: FrameSource, sink: Collect, delay: float = 0.0, **options) -> PipelineStats:
    return Pipeline(source, Enhancer(Passthrough(delay)), sink, progress=False, **options).run()


def no_pipeline_threads_left() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("cliplit-")]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_lossless_keeps_every_frame_in_order(batch_size):
    sink = Collect()
    stats = run(Numbered(40), sink, batch_size=batch_size)
    assert [item.index for item in sink.items] == list(range(40))
    assert all(int(item.image[0, 0, 0]) == item.index for item in sink.items)  # each frame's own pixels
    assert stats.frames == 40 and stats.dropped == 0 and not stats.stopped


def test_realtime_drops_stale_frames_and_always_takes_the_newest():
    sink = Collect()
    stats = run(Numbered(40, 0.005, live=True), sink, delay=0.03, realtime=True)
    indices = [item.index for item in sink.items]
    assert stats.dropped > 0 and stats.frames + stats.dropped == 40
    assert indices == sorted(set(indices)) and indices[-1] == 39
    assert "stale frames dropped" in stats.summary()


def test_stop_request_ends_the_run_and_keeps_what_was_done():
    holder: dict[str, Pipeline] = {}
    sink = Collect(then=lambda n: n == 5 and holder["pipeline"].stop())
    pipeline = Pipeline(Numbered(10_000), Enhancer(Passthrough()), sink, progress=False)
    holder["pipeline"] = pipeline
    stats = pipeline.run()
    assert stats.stopped and 5 <= stats.frames < 10_000
    assert [item.index for item in sink.items] == list(range(stats.frames))
    assert no_pipeline_threads_left()


def test_preview_runs_on_the_main_thread_and_can_stop_the_run():
    seen: list[str] = []

    def preview(frame: np.ndarray) -> bool:
        seen.append(threading.current_thread().name)
        return len(seen) < 3  # the user presses q on the third frame shown

    stats = run(Numbered(10_000, 0.001), Collect(), preview=preview)
    assert stats.stopped and not stats.interrupted and stats.frames < 10_000
    assert set(seen) == {threading.main_thread().name} and len(seen) >= 3


def test_failing_preview_aborts_every_stage():
    def preview(frame: np.ndarray) -> bool:
        raise CliplitError("no display")

    with pytest.raises(CliplitError, match="no display"):
        run(Numbered(10_000), Collect(), preview=preview)
    assert no_pipeline_threads_left()


def test_max_frames():
    sink = Collect()
    assert run(Numbered(50), sink, max_frames=7).frames == 7


@pytest.mark.parametrize("where", ["source", "sink"])
def test_a_failing_stage_aborts_the_run_and_raises(where):
    source = Numbered(1000, fail_at=20 if where == "source" else None)
    sink = Collect(fail_at=20 if where == "sink" else None)
    with pytest.raises(CliplitError, match="broke"):
        Pipeline(source, Enhancer(Passthrough()), sink, progress=False).run()
    assert no_pipeline_threads_left()


def test_summary_line_names_counts_rate_and_stages():
    stats = run(Numbered(12), Collect())
    line = stats.summary()
    assert line.startswith("12 frames in ") and "frames/s" in line
    assert all(f"{stage} " in line for stage in ("decode", "inference", "encode"))


@pytest.mark.parametrize(
    ("unit", "frames", "wall_s", "signum", "expected"),
    [
        ("image", 1, 3.2, 0, "1 image in 3.20 s (3.20 s per image); "),  # slow: not "0.3 images/s"
        ("image", 6, 2.0, 0, "6 images in 2.00 s (3.0 images/s); "),
        ("frame", 0, 0.5, 0, "0 frames in 0.50 s; "),  # no rate for nothing
        ("frame", 1, 0.5, 15, "1 frame in 0.50 s (2.0 frames/s); "),
    ],
)
def test_summary_units_and_plurals(unit, frames, wall_s, signum, expected):
    line = PipelineStats(unit=unit, frames=frames, wall_s=wall_s, signal=signum, dropped=1).summary()
    assert line.startswith(expected), line
    assert "; 1 stale frame dropped" in line
    assert line.endswith("; interrupted by SIGTERM") == (signum == 15)


class FakeCapture:
    """Stands in for cv2.VideoCapture: delivers ``frames`` then fails; reports ``count`` frames and 25 fps."""

    def __init__(self, frames: int, *, opened: bool = True, count: int = 0) -> None:
        self.left, self.opened, self.count = frames, opened, count
        self.released = False

    def isOpened(self) -> bool:  # OpenCV's name
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((4, 6, 3), np.uint8)

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_COUNT: float(self.count)}.get(prop, 0.0)

    def release(self) -> None:
        self.released = True


def opener(*captures: FakeCapture):
    queue = list(captures)
    opened: list[object] = []

    def open_capture(spec):
        opened.append(spec)
        return queue.pop(0) if queue else FakeCapture(0)

    return open_capture, opened


def test_dropped_stream_is_reopened_then_given_up_cleanly():
    open_capture, opened = opener(FakeCapture(3), FakeCapture(0), FakeCapture(2))
    source = CaptureSource("rtsp://cam/1", reconnect=3, retry_delay=0.0, open_capture=open_capture)
    items = list(source.items())
    assert [item.index for item in items] == [0, 1, 2, 3, 4]
    assert len(opened) == 1 + 2 + 3  # first open, two reopens until frames came back, three more in vain
    assert "did not come back after 3 reconnection attempts" in source.ended_by
    assert source.fps == 25


def test_stream_of_known_length_ends_without_reconnecting():
    open_capture, opened = opener(FakeCapture(3, count=3))
    source = CaptureSource("http://host/clip.mp4", open_capture=open_capture, retry_delay=0.0)
    assert len(list(source.items())) == 3 and source.ended_by is None and len(opened) == 1
    open_capture, _ = opener(FakeCapture(2, count=3))
    broken = CaptureSource("http://host/clip.mp4", open_capture=open_capture, retry_delay=0.0)
    assert len(list(broken.items())) == 2 and "broke off after 2 of 3 frames" in broken.ended_by


def test_unopenable_camera_is_a_clear_error_and_passwords_stay_out_of_messages():
    open_capture, _ = opener(FakeCapture(0, opened=False))
    with pytest.raises(CliplitError, match="cannot open camera 7: no such device"):
        CaptureSource(7, open_capture=open_capture)
    open_capture, _ = opener(FakeCapture(0, opened=False))
    with pytest.raises(CliplitError) as error:
        CaptureSource("rtsp://admin:hunter2@cam/stream", open_capture=open_capture)
    assert "hunter2" not in str(error.value) and "admin:***@cam" in str(error.value)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback-only HTTP server for ``tmp_path``, shut down after the test."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_http_stream_through_the_cli(http_server, float_onnx, tmp_path):
    base, served = http_server
    clip = write_clip(served / "clip.mp4", moving_crops(["c5b8b4070688114c602b27933c6699b6"], frames_per_photo=10))
    out = tmp_path / "live.mp4"
    argv = ["enhance", f"{base}/clip.mp4", "-o", str(out), "--model", str(float_onnx), "--no-progress"]
    assert main(argv) == 0
    info = probe(out)
    assert "160x120" in info and "10 fps" in info
    frames = decode_all(out)
    with Enhancer.open(float_onnx) as enhancer:
        expected = [enhancer.enhance(frame) for frame in decode_all(clip)]
    assert len(frames) == len(expected) == 10
    assert min(psnr(a, b) for a, b in zip(frames, expected, strict=True)) >= 33.0  # the codec bound of the video tests


def test_live_input_needs_an_output_or_a_window(capsys):
    assert main(["enhance", "rtsp://cam/stream"]) == 2
    assert "give an output video with -o" in capsys.readouterr().err


# --- progress within a frame that runs in tiles --------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_tiling() -> Callable[[], object]:
    """A maker of Tilings that force tiles of 32×32 on every frame (as test_tiling does), sharing one split model."""
    from cliplit.runtime.models import ensure_split
    from cliplit.runtime.tiling import SplitModel, Tiling

    split = SplitModel(*ensure_split("clip-lit"))
    return lambda: Tiling(lambda: split, tile=(32, 32))


def test_a_tiled_frame_reports_every_tile_in_order_with_the_total(split_tiling):
    from cliplit.runtime.tiling import plan_tiles, tile_light_maps

    tiling = split_tiling()
    frame = np.random.default_rng(5).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    tiles = plan_tiles(70, 90, (32, 32))
    assert len(tiles) == 9
    events: list[object] = []
    light_map = np.zeros((70, 90), np.float32)
    for region, part in tile_light_maps(tiling.split, frame, (32, 32), on_tile=lambda *done: events.append(done)):
        events.append(region)
        light_map[region.slices] = part
    # announced before the pooling pass, then each tile counted as its light map is ready, before it is handed on
    assert events == [(0, 9), *[event for i, tile in enumerate(tiles, 1) for event in ((i, 9), tile)]]
    reports: list[tuple[int, int]] = []
    tiling.enhance(frame, (32, 32), lambda *done: reports.append(done))
    assert np.array_equal(tiling.light_map(frame, (32, 32), lambda *done: reports.append(done)), light_map)
    assert reports == [(i, 9) for i in range(10)] * 2  # the whole-light-map path (--scale, smoothing) reports too


class RecordingBar:
    """Stands in for tqdm in the pipeline: keeps what the bar was told to show after the count."""

    def __init__(self) -> None:
        self.postfixes: list[str] = []

    def set_postfix_str(self, text: str) -> None:
        self.postfixes.append(text)

    def update(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("images", [True, False], ids=["image batch", "video frames"])
def test_the_progress_bar_counts_the_tiles_of_a_tiled_frame(split_tiling, tmp_path, monkeypatch, images):
    """An 8000×6000 photo in tiles sat at 0/1 for minutes: the bar now says "tiles 7/48" while it runs."""
    from cliplit.core.images import write_image
    from cliplit.runtime import pipeline as pipeline_module
    from cliplit.runtime.sources import ImageSource

    rng = np.random.default_rng(6)
    paths = []
    for name, size in (("large", (70, 90)), ("small", (40, 40))):  # 3×3 tiles, then 2×2
        paths.append(write_image(tmp_path / f"{name}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8)))
    bars: list[RecordingBar] = []
    monkeypatch.setattr(pipeline_module, "tqdm", lambda **options: bars.append(RecordingBar()) or bars[-1])
    enhancer = Enhancer(Passthrough(), tiling=split_tiling())
    sink = Collect()
    stats = Pipeline(ImageSource(paths), enhancer, sink, tolerate_errors=images, progress=True).run()
    assert stats.frames == 2 and stats.failed == 0
    expected = [f"tiles {i}/9" for i in range(9)] + [""] + [f"tiles {i}/4" for i in range(4)] + [""]
    assert bars[0].postfixes == expected  # cleared after each frame's last tile
    assert enhancer.on_tile is None  # the hook was the run's only
    Pipeline(ImageSource(paths), enhancer, Collect(), tolerate_errors=images, progress=False).run()
    assert bars[1].postfixes == []
