"""Where a video frame's CPU goes: each stage of ``cliplit enhance --model clip-lit-rt`` alone, in CPU milliseconds
per frame, beside ffmpeg's plain transcode of the same clip.

    python -m cliplit.benchmarks.stage_budget --photos ../shared/photos --sizes 720p 1080p --out DIR

On a machine whose cores are all busy, the fps of the pipeline is its cores divided by the CPU a frame needs, so the
ratio to ffmpeg's fps is set by the stages' CPU, not by how they overlap; the end-to-end rows (``cliplit.benchmarks
.video``) show how well they overlap. Each stage runs over the same frames of a pan over held-out photos (held in
memory, ``--frames`` of them) with the runtime's own functions: decoding (the reader's threaded decoder), the
YUV → BGR conversion (``video_colour.frame_to_bgr``), the student's fast path in its three parts (exact 4×4 pooling,
the coefficients network on the backend as ``Enhancer.open`` sets it up, the full-resolution OpenCV pass), and the
writer (``video_colour.bgr_to_frame`` then x264 with the defaults of ``cliplit enhance``). CPU time is the process's
user + system time (``getrusage``), all threads, so a stage on two threads counts both.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from cliplit.benchmarks.machine import cpu_model, load_snapshot
from cliplit.benchmarks.video import clip_sizes, measure_ffmpeg, pan_clip, pan_photos
from cliplit.benchmarks.workloads import FrameSize
from cliplit.core.cli_settings import SettingsCli, from_args, setting
from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends import BACKEND_CHOICES
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.student_fast import apply_coefficients, pooled_batch
from cliplit.runtime.video_colour import BT709, LIMITED, bgr_to_frame, frame_to_bgr
from cliplit.runtime.video_encoding import encoder_settings
from cliplit.runtime.video_write import VideoWriter

PROG = "python -m cliplit.benchmarks.stage_budget"
CLIP_FPS = 30


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (ffmpeg), all threads."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Stage:
    """One stage's cost over ``frames`` frames."""

    name: str
    cpu_ms: float  # per frame
    wall_ms: float  # per frame


def measure(name: str, frames: int, work: Callable[[], Any]) -> tuple[Stage, Any]:
    """Run ``work`` once and bill its CPU and wall time to ``frames`` frames; return the stage and its result."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = work()
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    return Stage(name, 1000 * cpu / frames, 1000 * wall / frames), result


def decode(clip: Path, limit: int) -> list[av.VideoFrame]:
    """The first ``limit`` frames of ``clip``, decoded as the reader decodes (frame and slice threads)."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = []
        for frame in container.decode(stream):
            frames.append(frame)
            if len(frames) == limit:
                break
    return frames


def encode(images: list[np.ndarray], output: Path) -> None:
    """Write ``images`` as ``cliplit enhance`` writes a video (its writer and its default encoder settings)."""
    height, width = images[0].shape[:2]
    rate = Fraction(CLIP_FPS)
    writer = VideoWriter(output, width, height, time_base=1 / rate, rate=rate, settings=encoder_settings(output))
    for index, image in enumerate(images):
        writer.write(image, index)
    writer.close()


def stage_budget(clip: Path, frames: int, backend: str, workdir: Path) -> list[Stage]:
    """Every stage's CPU per frame for the first ``frames`` frames of ``clip``, and ffmpeg's transcode for scale."""
    decoded = decode(clip, frames)
    count = len(decoded)
    transcode = lambda: measure_ffmpeg(clip, workdir / "transcoded.mp4", count)  # noqa: E731
    stages = [measure("ffmpeg transcode alone (decode + x264, for scale)", count, transcode)[0]]
    stage, decoded = measure("decode (threaded)", count, lambda: decode(clip, frames))
    stages.append(stage)
    stage, images = measure("YUV → BGR (swscale)", count, lambda: [frame_to_bgr(frame) for frame in decoded])
    stages.append(stage)
    with Enhancer.open("clip-lit-rt", backend) as enhancer:
        if enhancer.fast is None:
            raise CliplitError(f"--backend {backend} has no student fast path to measure (ONNX Runtime or OpenVINO)")
        runner = enhancer.fast.runner
        stage, pooled = measure("exact 4×4 pooling", count, lambda: [pooled_batch([image]) for image in images])
        stages.append(stage)
        runner(pooled[0])  # warm-up
        network = f"coefficients network, 1/4 resolution ({enhancer.backend.describe()})"
        stage, maps = measure(network, count, lambda: [runner(batch)[0] for batch in pooled])
        stages.append(stage)
    full = lambda: [apply_coefficients(image, m) for image, m in zip(images, maps, strict=True)]  # noqa: E731
    stage, enhanced = measure("full-resolution pass (OpenCV)", count, full)
    stages.append(stage)
    to_yuv = lambda: [bgr_to_frame(image, "yuv420p", BT709, LIMITED) for image in enhanced]  # noqa: E731
    stage, _ = measure("BGR → YUV (swscale)", count, to_yuv)
    stages.append(stage)
    stages.append(measure("BGR → YUV + x264 (the writer)", count, lambda: encode(enhanced, workdir / "out.mp4"))[0])
    return stages


#: the stages that make up the pipeline's CPU (the writer's row includes its BGR → YUV conversion)
PIPELINE = (
    "decode",
    "YUV → BGR",
    "exact 4×4 pooling",
    "coefficients network",
    "full-resolution pass",
    "BGR → YUV + x264",
)


def ceiling(stages: list[Stage]) -> tuple[float, float]:
    """The pipeline's CPU per frame (its stages summed) and the fps ratio to ffmpeg it allows on a machine whose
    cores are all busy: ffmpeg's CPU per frame over the pipeline's."""
    total = sum(stage.cpu_ms for stage in stages if stage.name.startswith(PIPELINE))
    return total, stages[0].cpu_ms / total


def budget_table(size: FrameSize, stages: list[Stage]) -> list[str]:
    """A Markdown table of one size's stages."""
    lines = [f"### {size.label}", "", "| stage | CPU ms per frame | wall ms per frame |", "| --- | --- | --- |"]
    lines += [f"| {stage.name} | {stage.cpu_ms:.2f} | {stage.wall_ms:.2f} |" for stage in stages]
    total, ratio = ceiling(stages)
    lines += [f"| **pipeline total (the stages above but the first and the lone BGR → YUV)** | **{total:.2f}** | |"]
    return [*lines, "", f"CPU-bound ceiling of the fps ratio to ffmpeg: {ratio:.2f}", ""]


@dataclass(frozen=True)
class StageBudgetSettings:
    """What to measure and where to write it."""

    photos: Path | None = setting(None, "folder of held-out photos to pan over", required=True)  # noqa: RUF009
    out: Path | None = setting(None, "folder for results.json and results.md", required=True)  # noqa: RUF009
    sizes: tuple[str, ...] = setting(("720p", "1080p"), "clip sizes", metavar="SIZE")
    frames: int = setting(150, "frames per size, held in memory (150 at 1080p: about 1.5 GB)")
    backend: str = setting("onnxruntime", "backend of the coefficients network", choices=BACKEND_CHOICES)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise CliplitError("--frames must be at least 1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").splitlines()[0])
    SettingsCli(StageBudgetSettings).add_to(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: _run(from_args(StageBudgetSettings, args)), PROG, "bench")


def _run(settings: StageBudgetSettings) -> int:
    assert settings.photos is not None and settings.out is not None  # required flags
    sizes = clip_sizes(settings.sizes)
    photos = pan_photos(settings.photos)
    started = load_snapshot()
    results: dict[str, Any] = {"machine": cpu_model(), "load_at_start": started, "sizes": {}}
    lines = [f"# CPU per frame by stage ({cpu_model()}; load at start {started.get('load_average')})", ""]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for size in sizes:
            clip = pan_clip(workdir / f"pan-{size.wxh}.mp4", photos, size, settings.frames / CLIP_FPS)
            stages = stage_budget(clip, settings.frames, settings.backend, workdir)
            total, ratio = ceiling(stages)
            rows = [stage.__dict__ for stage in stages]
            results["sizes"][size.label] = {"stages": rows, "pipeline_cpu_ms": total, "ceiling_ratio": ratio}
            lines += budget_table(size, stages)
            print("\n".join(budget_table(size, stages)), flush=True)
    results["load_at_end"] = load_snapshot()
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (settings.out / "results.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
