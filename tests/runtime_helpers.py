"""Test clips for the runtime: moving crops of the released photos, with audio, written by ffmpeg directly.

The clips are encoded with a plain ffmpeg command (not the runtime's own writer) and decoded with OpenCV (not the
runtime's reader), so the tests of the runtime's video path do not use the code under test to make or read clips.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from conftest import photo

from cliplit.benchmarks import scale_tables as measure
from cliplit.core.images import read_image


def moving_crops(names: Sequence[str], **options: object) -> list[np.ndarray]:
    """Frames panning across the named released photos (see :func:`cliplit.benchmarks.scale_tables.moving_crops`)."""
    return measure.moving_crops([read_image(photo(name)) for name in names], **options)


def write_clip(
    path: Path, frames: Sequence[np.ndarray], fps: str = "10", *, audio: bool = True, pix_fmt: str = "yuv420p"
) -> Path:
    """Encode ``frames`` (H×W×3 BGR) at ``fps`` with x264, plus a 440 Hz tone as long as the video when ``audio``."""
    height, width = frames[0].shape[:2]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    command += ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", fps, "-i", "-"]
    if audio:
        command += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-shortest", "-c:a", "aac"]
    command += ["-c:v", "libx264", "-crf", "16", "-pix_fmt", pix_fmt, str(path)]
    subprocess.run(command, input=b"".join(frame.tobytes() for frame in frames), check=True)
    return path


def probe(path: Path) -> str:
    """ffmpeg's description of a media file (its stream lines), for asserting on codecs and audio."""
    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False
    )
    return done.stderr


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of a video as BGR, through OpenCV (an independent decoder from the runtime's ffmpeg pipe)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def enhance_on_small_disk(argv: Sequence[object], disk: Path, kilobytes: int) -> tuple[int, str, list[str]]:
    """Run `cliplit enhance ARGV` with ``disk`` mounted as a tmpfs of ``kilobytes`` (a real ENOSPC for cliplit and
    its ffmpeg children), in a private user and mount namespace; returns the exit status, stderr and what the
    command left on the disk. Skips where the kernel does not allow unprivileged namespaces."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0:
        pytest.skip("needs unshare and unprivileged user/mount namespaces to mount a small file system")
    disk.mkdir(exist_ok=True)
    command = shlex.join([sys.executable, "-m", "cliplit.runtime.cli", "enhance", *map(str, argv), "--no-progress"])
    script = (
        f"mount -t tmpfs -o size={kilobytes}k tmpfs {shlex.quote(str(disk))} || exit 99\n"
        f"{command}\nstatus=$?\necho '--- left on disk:'\nls -A {shlex.quote(str(disk))}\nexit $status\n"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert done.returncode != 99, done.stderr
    left = done.stdout.split("--- left on disk:\n", 1)[1].split()
    return done.returncode, done.stderr, left
