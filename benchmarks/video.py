"""End-to-end video throughput: decode + enhance + encode through the runtime's own pipeline.

Network latency alone overstates what a user gets: decoding, colour conversion, light-map upsampling and x264
encoding share the machine with inference. So this runs what ``cliplit enhance clip.mp4 -o out.mp4`` runs
(``VideoFileSource`` → ``Pipeline`` → ``VideoSink`` with its default codec settings) on a synthetic clip made with
the ffmpeg that imageio-ffmpeg ships (``testsrc2``: moving colour patterns and text, H.264), and reports frames per
second of wall time. The enhancer is warmed up on one frame first, so one-off initialisation is not billed to the
clip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np

from cliplit.benchmarks.workloads import FrameSize
from cliplit.core.errors import CliplitError
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.pipeline import Pipeline
from cliplit.runtime.sinks import VideoSink
from cliplit.runtime.sources import VideoFileSource

CLIP_FPS = 30


def check_clip_size(size: FrameSize) -> None:
    """Refuse sizes the 4:2:0 H.264 test clip cannot have, before a run starts rather than at its end."""
    if size.width % 2 or size.height % 2:
        raise CliplitError(f"--video-size {size.wxh}: H.264 test clips need an even width and height")


def synthetic_clip(path: Path, size: FrameSize, frames: int, fps: int = CLIP_FPS) -> Path:
    """Write a ``frames``-long H.264 test-pattern clip of ``size`` to ``path`` (a scratch file of the benchmark)."""
    check_clip_size(size)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi"]
    command += ["-i", f"testsrc2=size={size.wxh}:rate={fps}", "-frames:v", str(frames)]
    command += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CliplitError(f"ffmpeg could not make the test clip: {result.stderr.strip()[-500:]}")
    return path


def measure_video(enhancer: Enhancer, clip: Path, output: Path, *, batch: int = 1) -> dict[str, Any]:
    """Run the clip through the runtime pipeline once; return frames, seconds, fps and per-stage mean ms."""
    source = VideoFileSource(clip)
    try:
        first = np.zeros((source.info.height, source.info.width, 3), dtype=np.uint8) + 128
        enhancer.enhance(first)  # warm-up: sessions, kernel caches, engine contexts
        with VideoSink(output, source.fps, overwrite=True) as sink:
            stats = Pipeline(source, enhancer, sink, batch_size=batch, progress=False).run()
            sink.finish()
    finally:
        source.close()
    return {
        "frames": stats.frames,
        "seconds": stats.wall_s,
        "fps": stats.fps,
        "stage_mean_ms": {stage: stats.mean_ms(stage) for stage in stats.stage_s},
        "encoded_frames": sink.frames,
    }
