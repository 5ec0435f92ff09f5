"""Measure what ``--scale`` and ``--temporal-smoothing`` cost and buy; prints the Markdown tables of docs/runtime.md.

    python -m cliplit.benchmarks.scale_tables scale --photos ../shared/clip-lit/input [--model m.onnx] [--threads N]
    python -m cliplit.benchmarks.scale_tables flicker --photos ../shared/clip-lit/input [--model m.onnx]

``scale``: for S in {1, 0.5, 0.25} and each upsampling method, the PSNR of every photo's output against its
full-resolution output and the time of one ``enhance`` call (best of two, so the first run's allocations do not
count). ``flicker``: a clip panning across the photos (with a cut between photos), with and without simulated
exposure flicker, enhanced at several smoothing strengths A; the flicker measure is the mean absolute
frame-to-frame change of the output divided by that of the input (1 = the output changes as much as the input).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cliplit.core.cli_settings import SettingsCli, from_args, setting
from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.core.images import is_image_path, read_image
from cliplit.core.metrics import psnr
from cliplit.runtime.backends import Backend, open_backend, options_for, select_backend
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.upsample import UPSAMPLE_METHODS

#: brightness gains cycled over the frames of the flickering clip (a light source beating with the shutter)
FLICKER_GAINS = (1.0, 1.15, 0.9, 1.1, 0.85, 1.05)


def moving_crops(
    photos: Sequence[np.ndarray],
    size: tuple[int, int] = (160, 120),
    frames_per_photo: int = 12,
    gains: Sequence[float] = (),
) -> list[np.ndarray]:
    """BGR frames panning across each photo in turn (so there is a cut between photos); with ``gains``, frame i's
    brightness is multiplied by ``gains[i % len(gains)]`` (simulated exposure flicker)."""
    width, height = size
    frames = []
    for photo in photos:
        scale = 2.5 * max(height / photo.shape[0], width / photo.shape[1])
        image = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
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


def fixed_camera(
    photos: Sequence[np.ndarray], size: tuple[int, int] = (256, 144), frames_per_photo: int = 16
) -> list[np.ndarray]:
    """A still view of each photo in turn while a dark object (a person, a car) crosses it: with a fixed camera,
    everything that changes in the output outside the object is flicker made by the network."""
    width, height = size
    frames = []
    for photo in photos:
        scale = max(height / photo.shape[0], width / photo.shape[1])
        view = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:height, :width]
        for step in range(frames_per_photo):
            frame = view.copy()
            left = round((step / max(1, frames_per_photo - 1)) * (width + width // 5)) - width // 5
            cv2.rectangle(frame, (left, height // 5), (left + width // 5, height), (20, 20, 20), -1)
            frames.append(frame)
    return frames


def flicker_ratio(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean |frame-to-frame change| of the outputs over that of the inputs (8-bit levels, all pixels)."""

    def change(frames: Sequence[np.ndarray]) -> float:
        return float(np.mean([np.abs(b.astype(np.float32) - a).mean() for a, b in itertools.pairwise(frames)]))

    return change(outputs) / change(inputs)


def background_flicker(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean |frame-to-frame change| of the output, in 8-bit levels, where the input did not change at all."""
    changes = []
    for (before, after), (out_before, out_after) in zip(
        itertools.pairwise(inputs), itertools.pairwise(outputs), strict=True
    ):
        still = np.all(before == after, axis=2)
        if still.any():
            changes.append(np.abs(out_after.astype(np.float32) - out_before)[still].mean())
    return float(np.mean(changes))


def scale_table(backend: Backend, photos: dict[str, np.ndarray]) -> str:
    rows = ["| photo | size | S=1 time | " + " | ".join(_scale_columns()) + " |"]
    rows.append("|" + " --- |" * (3 + len(_scale_columns())))
    for name, photo in photos.items():
        reference, full_time = _timed(Enhancer(backend), photo)
        cells = [name[:24], f"{photo.shape[1]}x{photo.shape[0]}", f"{full_time:.2f} s"]
        for scale in (0.5, 0.25):
            for method in UPSAMPLE_METHODS:
                output, seconds = _timed(Enhancer(backend, scale=scale, upsample=method), photo)
                cells.append(f"{psnr(output, reference):.1f} dB, {seconds:.2f} s")
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], file=sys.stderr)
    return "\n".join(rows)


def flicker_table(backend: Backend, photos: dict[str, np.ndarray]) -> str:
    strengths = (0.0, 0.5, 0.8, 0.9)
    rows = ["| clip | measure | " + " | ".join(f"A = {a:g}" for a in strengths) + " |"]
    rows.append("|" + " --- |" * (2 + len(strengths)))
    images = list(photos.values())
    clips = {
        "moving camera": (moving_crops(images, (256, 144), 16), flicker_ratio),
        "moving camera, exposure flicker": (moving_crops(images, (256, 144), 16, FLICKER_GAINS), flicker_ratio),
        "fixed camera, object crossing": (fixed_camera(images), background_flicker),
    }
    for label, (frames, measure) in clips.items():
        cells = []
        for strength in strengths:
            enhancer = Enhancer(backend, temporal_smoothing=strength)
            outputs = [enhancer.enhance(frame) for frame in frames]
            cuts = f" ({enhancer.smoother.cuts} cuts)" if enhancer.smoother is not None else ""
            cells.append(f"{measure(frames, outputs):.3f}{cuts}")
        name = "output/input change" if measure is flicker_ratio else "background change (levels)"
        rows.append(f"| {label} ({len(frames)} frames) | {name} | " + " | ".join(cells) + " |")
        print(rows[-1], file=sys.stderr)
    return "\n".join(rows)


@dataclass(frozen=True)
class ScaleTablesSettings:
    """Which table to measure, on which photos, with which model."""

    table: str = setting("scale", "which table", names=("table",), choices=("scale", "flicker"), required=True)
    photos: Path | None = setting(None, "folder of test photos", required=True)  # noqa: RUF009 (setting makes a field)
    model: str | None = setting(None, "model to run (default: the released weights' ONNX)")
    threads: int | None = setting(None, "CPU threads (default: all)")


def main(argv: Sequence[str] | None = None) -> int:
    prog = "python -m cliplit.benchmarks.scale_tables"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    SettingsCli(ScaleTablesSettings).add_to(parser)
    settings = from_args(ScaleTablesSettings, parser.parse_args(argv))
    return run_command(lambda: _run(settings), prog, "bench")


def _run(settings: ScaleTablesSettings) -> int:
    if not settings.photos.is_dir():
        raise CliplitError(f"--photos {settings.photos}: no such folder")
    photos = {p.stem: read_image(p) for p in sorted(settings.photos.iterdir()) if is_image_path(p)}
    if not photos:
        raise CliplitError(f"--photos {settings.photos}: no photos there")
    table = scale_table if settings.table == "scale" else flicker_table
    options = options_for(select_backend(settings.model), threads=settings.threads)
    with open_backend(settings.model, options) as backend:
        print(table(backend, photos))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {_cpu_count()} CPU threads, ONNX Runtime on CPU")
    return 0


def _scale_columns() -> list[str]:
    return [f"S={scale} {method}" for scale in (0.5, 0.25) for method in UPSAMPLE_METHODS]


def _timed(enhancer: Enhancer, photo: np.ndarray) -> tuple[np.ndarray, float]:
    """The output and the best time of two runs."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        output = enhancer.enhance(photo)
        best = min(best, time.perf_counter() - started)
    return output, best


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
