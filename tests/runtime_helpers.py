"""Test clips for the runtime: moving crops of the released photos, with audio, written by ffmpeg directly.

The clips are made with a plain ffmpeg command (not the runtime's own writer), so the tests of the runtime's video
path do not depend on the code under test to make their input.
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


def moving_crops(
    names: Sequence[str], size: tuple[int, int] = (160, 120), frames_per_photo: int = 12, gains: Sequence[float] = ()
) -> list[np.ndarray]:
    """BGR frames panning across each photo in turn (a cut between photos); ``gains`` multiplies frame i's
    brightness by ``gains[i % len(gains)]`` (simulated exposure flicker)."""
    width, height = size
    frames = []
    for name in names:
        image = cv2.imread(str(photo(name)))
        scale = 2.5 * height / image.shape[0]
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        travel_x, travel_y = image.shape[1] - width, image.shape[0] - height
        for step in range(frames_per_photo):
            t = step / max(1, frames_per_photo - 1)
            x, y = round(t * travel_x * 0.5), round(t * travel_y * 0.3)
            frames.append(np.ascontiguousarray(image[y : y + height, x : x + width]))
    if gains:
        frames = [
            np.clip(frame.astype(np.float32) * gains[i % len(gains)], 0, 255).astype(np.uint8)
            for i, frame in enumerate(frames)
        ]
    return frames


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
