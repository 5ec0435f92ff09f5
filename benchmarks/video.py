"""End-to-end video throughput: decode + enhance + encode through the runtime's own pipeline, beside ffmpeg.

Network latency alone overstates what a user gets: decoding, colour conversion, light-map upsampling and x264
encoding share the machine with inference. So this runs what ``cliplit enhance clip.mp4 -o out.mp4`` runs
(``VideoFileSource`` → ``Pipeline`` → ``VideoSink`` with its default codec settings and the clip's audio copied) and
reports frames per second of wall time. The enhancer is warmed up on one frame first, so one-off initialisation is
not billed to the clip.

Absolute fps on a shared machine vary 1.3–1.7× between days, so the row that holds still is the ratio to the
ceiling measured in the same run: the ffmpeg binary that imageio-ffmpeg ships transcoding the same clip with the same
codec settings (what a user would run instead; the pipeline without the network). :func:`compare_with_ffmpeg` runs
the two interleaved, best of ``rounds`` each. The clip is a pan over real photos (:func:`pan_clip`): x264 spends more
on real texture than on a synthetic test pattern, which would flatter both. ``cliplit bench --video`` and
``python -m cliplit.benchmarks.video`` both measure through :func:`run_video_bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import imageio_ffmpeg
import numpy as np

from cliplit.benchmarks.machine import OtherLoad, cpu_model, load_snapshot, machine_info
from cliplit.benchmarks.records import reason_of
from cliplit.benchmarks.workloads import FrameSize, parse_size
from cliplit.core.cli_settings import SettingsCli, from_args, setting
from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.core.images import is_image_path, read_image
from cliplit.runtime.backends import BACKEND_CHOICES, open_backend
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.pipeline import Pipeline
from cliplit.runtime.sinks import VideoSink
from cliplit.runtime.sources import VideoFileSource
from cliplit.runtime.video_encoding import encoder_settings

CLIP_FPS = 30
PAN_ZOOM = 1.25  # each photo is scaled to cover the frame this much over, so the view has room to travel


def check_clip_size(size: FrameSize) -> None:
    """Refuse sizes the 4:2:0 H.264 test clip cannot have, before a run starts rather than at its end."""
    if size.width % 2 or size.height % 2:
        raise CliplitError(f"--video-size {size.wxh}: H.264 test clips need an even width and height")


def _ffmpeg(arguments: list[str], stdin: int | None = None) -> subprocess.Popen:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *arguments]
    if stdin is not None:
        command.remove("-nostdin")
    return subprocess.Popen(command, stdin=stdin, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen, what: str) -> None:
    assert process.stderr is not None
    stderr = process.stderr.read()  # ffmpeg at -loglevel error writes little: no pipe fills while it runs
    process.wait()
    if process.returncode != 0:
        raise CliplitError(f"ffmpeg could not {what}: {stderr.decode(errors='replace').strip()[-500:]}")


def _x264_arguments(output: Path) -> list[str]:
    """The codec options of ``cliplit enhance``'s default for ``output`` (read from the runtime, so they match)."""
    settings = encoder_settings(output)
    arguments = ["-c:v", settings.codec, "-pix_fmt", settings.pix_fmt]
    if settings.crf is not None:
        arguments += ["-crf", str(settings.crf)]
    if settings.preset is not None:
        arguments += ["-preset", settings.preset]
    return arguments


def clip_sizes(texts: Sequence[str]) -> list[FrameSize]:
    """``--sizes`` of a video benchmark, each parsed and checked (H.264 clips need even sides)."""
    sizes = [parse_size(text) for text in texts]
    for size in sizes:
        check_clip_size(size)
    return sizes


def pan_frames(photos: Sequence[np.ndarray], size: FrameSize, frames: int) -> Iterator[np.ndarray]:
    """``frames`` BGR frames of ``size`` panning diagonally across each photo in turn (a cut between photos), one at
    a time, so a 20 s 1080p clip never sits in memory."""
    per_photo = -(-frames // len(photos))
    for start in range(0, frames, per_photo):
        photo = photos[start // per_photo]
        scale = PAN_ZOOM * max(size.height / photo.shape[0], size.width / photo.shape[1])
        image = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for step in range(min(per_photo, frames - start)):
            t = step / max(1, per_photo - 1)
            x, y = round(t * (image.shape[1] - size.width)), round(t * (image.shape[0] - size.height))
            yield np.ascontiguousarray(image[y : y + size.height, x : x + size.width])


def pan_clip(path: Path, photos: Sequence[Path], size: FrameSize, seconds: float, fps: int = CLIP_FPS) -> Path:
    """Write an H.264 clip (x264 veryfast CRF 18, yuv420p) of ``seconds`` panning over ``photos``, with an AAC
    tone as its audio track (the transcode and ``cliplit enhance`` both copy it)."""
    check_clip_size(size)
    if not photos:
        raise CliplitError("the video benchmark needs at least one photo to pan over")
    frames = max(1, round(seconds * fps))
    arguments = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", size.wxh, "-r", str(fps), "-i", "pipe:0"]
    arguments += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={frames / fps}"]
    arguments += ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "128k", "-shortest"]
    arguments += [*_x264_arguments(path), str(path)]
    process = _ffmpeg(arguments, stdin=subprocess.PIPE)
    assert process.stdin is not None
    images = [read_image(photo) for photo in photos]
    try:
        for frame in pan_frames(images, size, frames):
            process.stdin.write(frame.tobytes())
    finally:
        process.stdin.close()
    _finish(process, "make the pan clip")
    return path


def measure_ffmpeg(clip: Path, output: Path, frames: int) -> dict[str, Any]:
    """The ceiling: ffmpeg alone transcoding ``clip`` with ``cliplit enhance``'s codec settings, audio copied."""
    started = time.perf_counter()
    arguments = ["-i", str(clip), "-map", "0:v", "-map", "0:a?", *_x264_arguments(output), "-c:a", "copy"]
    _finish(_ffmpeg([*arguments, str(output)]), "transcode the clip")
    seconds = time.perf_counter() - started
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds}


def measure_video(enhancer: Enhancer, clip: Path, output: Path, *, batch: int = 1) -> dict[str, Any]:
    """Run the clip through the runtime pipeline once (audio copied, as ``cliplit enhance`` does); return frames,
    seconds, fps and per-stage mean ms."""
    source = VideoFileSource(clip)
    try:
        first = np.zeros((source.info.height, source.info.width, 3), dtype=np.uint8) + 128
        enhancer.enhance(first)  # warm-up: sessions, kernel caches, engine contexts
        audio = clip if source.info.has_audio else None
        with VideoSink(output, source.fps, time_base=source.time_base, audio_from=audio, overwrite=True) as sink:
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


def compare_with_ffmpeg(
    open_enhancer: Callable[[], AbstractContextManager[Enhancer]],
    clip: Path,
    workdir: Path,
    *,
    rounds: int = 2,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """The video row: ``clip`` through the pipeline and through ffmpeg alone, interleaved ``rounds`` times; the
    best of each (the least disturbed by other processes) and their ratio, with every round kept."""
    if rounds < 1:
        raise CliplitError(f"the video comparison needs at least one round, got {rounds}")
    source = VideoFileSource(clip)
    frames, size = source.total, (source.info.width, source.info.height)
    source.close()
    cliplit_runs: list[dict[str, Any]] = []
    ffmpeg_runs: list[dict[str, Any]] = []
    with open_enhancer() as enhancer:
        for round_index in range(rounds):
            ffmpeg_runs.append(measure_ffmpeg(clip, workdir / "transcoded.mp4", frames or 0))
            cliplit_runs.append(measure_video(enhancer, clip, workdir / "enhanced.mp4"))
            log(
                f"video round {round_index + 1}/{rounds}: cliplit {cliplit_runs[-1]['fps']:.1f} fps, "
                f"ffmpeg {ffmpeg_runs[-1]['fps']:.1f} fps"
            )
        description = enhancer.describe()
    for run in ffmpeg_runs:  # the pipeline counts what it wrote; ffmpeg is billed the same frames
        run.update(frames=cliplit_runs[0]["frames"], fps=cliplit_runs[0]["frames"] / run["seconds"])
    best, ceiling = max(cliplit_runs, key=lambda r: r["fps"]), max(ffmpeg_runs, key=lambda r: r["fps"])
    return {
        "width": size[0],
        "height": size[1],
        "frames": best["frames"],
        "enhancer": description,
        "fps": best["fps"],
        "ffmpeg_fps": ceiling["fps"],
        "ratio": best["fps"] / ceiling["fps"],
        "stage_mean_ms": best["stage_mean_ms"],
        "rounds": {"cliplit": cliplit_runs, "ffmpeg": ffmpeg_runs},
    }


def pan_photos(folder: Path, count: int = 5) -> list[Path]:
    """``count`` photos spread evenly over ``folder``'s sorted images (the held-out photos, never the evaluation
    set), so every run pans over the same ones."""
    images = sorted(path for path in folder.glob("*") if path.is_file() and is_image_path(path))
    if not images:
        raise CliplitError(f"{folder}: no photos to pan over (give a folder of held-out photos)")
    step = max(1, len(images) // count)
    return images[::step][:count]


def _whole_student() -> Enhancer:
    """``clip-lit-rt`` without its fast path: the whole ONNX model, as the runtime ran it before (and still does for
    ``--scale``, smoothing and 16-bit frames)."""
    return Enhancer(open_backend("clip-lit-rt"))


def run_video_bench(
    sizes: Sequence[FrameSize], photos: Sequence[Path], workdir: Path, *, seconds: float, rounds: int,
    teacher_seconds: float, whole_rounds: int, log: Callable[[str], None], backend: str = "auto",
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The video rows, each as it is measured: ``clip-lit-rt`` on a ``seconds`` pan at each size (and, with
    ``whole_rounds`` > 0, its whole model without the fast path, for comparison), and the teacher (the released
    CLIP-LIT) on a ``teacher_seconds`` pan at the first size (0: not run; one round, it takes seconds per frame),
    each beside ffmpeg alone; ``backend``: the runtime backend ``clip-lit-rt`` runs on, as ``--backend``."""
    plan: list[tuple[str, Callable[[], Enhancer], FrameSize, float, int]] = []
    for size in sizes:
        plan.append(("clip-lit-rt", lambda: Enhancer.open("clip-lit-rt", backend), size, seconds, rounds))
        if whole_rounds > 0:
            plan.append(("clip-lit-rt, whole model", _whole_student, size, seconds, whole_rounds))
    if teacher_seconds > 0:
        plan.append(("clip-lit", lambda: Enhancer.open("clip-lit"), sizes[0], teacher_seconds, 1))
    for model, opener, size, length, times in plan:
        clip = workdir / f"pan-{size.wxh}-{length:g}s.mp4"
        if not clip.is_file():
            pan_clip(clip, photos, size, length)
        contention = OtherLoad()
        contention.start()
        row: dict[str, Any] = {"model": model, "size": size.label, "width": size.width, "height": size.height}
        row.update(seconds_of_video=length, status="ok", reason=None)
        try:
            row.update(compare_with_ffmpeg(opener, clip, workdir, rounds=times, log=log))
        except Exception as error:  # one model's failure (no weights, no backend here) is its row, not the run's
            row.update(status="error", reason=reason_of(error))
            log(f"{model} {size.label}: error {error}")
        else:
            speeds = f"{row['fps']:.1f} fps, ffmpeg {row['ffmpeg_fps']:.1f} fps"
            log(f"{model} {size.label}: {speeds}, ratio {row['ratio']:.2f}")
        finally:
            row["other_load_cores"] = contention.stop()
        yield row


def video_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows as a Markdown table (the standalone run's and ``cliplit bench``'s report), failed rows with their
    reason."""
    lines = [
        "| model | size | frames | cliplit enhance fps | ffmpeg transcode fps | ratio "
        "| ms per frame: decode / enhance / encode | others' load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['model']} | {row['width']}×{row['height']} | | error: {row['reason']} | | | | |")
            continue
        stages = " / ".join(f"{row['stage_mean_ms'][stage]:.1f}" for stage in ("decode", "inference", "encode"))
        load = row["other_load_cores"]
        lines.append(
            f"| {row['model']} | {row['width']}×{row['height']} | {row['frames']} | {row['fps']:.1f} | "
            f"{row['ffmpeg_fps']:.1f} | **{row['ratio']:.2f}** | {stages} | "
            f"{'n/a' if load is None else f'{load:.1f} cores'} |"
        )
    return lines


@dataclass(frozen=True)
class VideoBenchSettings:
    """The standalone run's options (``cliplit bench --video`` takes its own from the bench settings)."""

    photos: Path | None = setting(None, "folder of photos to pan over (held-out ones)", required=True)  # noqa: RUF009
    sizes: tuple[str, ...] = setting(("720p", "1080p"), "clip sizes")
    seconds: float = setting(20.0, "length of each clip")
    rounds: int = setting(2, "interleaved rounds, best kept")
    teacher_seconds: float = setting(0.5, "teacher clip length; 0: skip it")
    whole_rounds: int = setting(0, "rounds of clip-lit-rt's whole model")
    backend: str = setting("auto", "backend clip-lit-rt runs on, as cliplit enhance --backend", choices=BACKEND_CHOICES)
    out: Path | None = setting(None, "folder for results.json and results.md", required=True)  # noqa: RUF009


PROG = "python -m cliplit.benchmarks.video"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="cliplit enhance against a plain ffmpeg transcode, end to end."
    )
    SettingsCli(VideoBenchSettings).add_to(parser)
    settings = from_args(VideoBenchSettings, parser.parse_args(argv))
    return run_command(lambda: _run(settings, argv if argv is not None else sys.argv[1:]), PROG, "bench")


def _run(settings: VideoBenchSettings, argv: list[str]) -> int:
    assert settings.photos is not None and settings.out is not None  # required flags
    sizes = clip_sizes(settings.sizes)
    photos = pan_photos(settings.photos)
    started = load_snapshot()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        for row in run_video_bench(
            sizes, photos, Path(workdir), seconds=settings.seconds, rounds=settings.rounds,
            teacher_seconds=settings.teacher_seconds, whole_rounds=settings.whole_rounds,
            log=lambda line: print(line, flush=True), backend=settings.backend,
        ):  # fmt: skip
            rows.append(row)
            _write_results(settings.out, argv, started, rows)  # each row kept
    return 0


def _write_results(out: Path, argv: list[str], started: dict[str, object], rows: list[dict[str, Any]]) -> None:
    results = {"machine": machine_info(), "load_at_start": started, "load_at_end": load_snapshot(), "video": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    header = [
        "# cliplit enhance against a plain ffmpeg transcode",
        "",
        f"Command: `python -m cliplit.benchmarks.video {' '.join(argv)}`",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs; load at start {started.get('load_average')}",
        "- Clips: pans over photos (x264 veryfast CRF 18, yuv420p, AAC audio); both sides write x264 veryfast CRF 18"
        " yuv420p with the audio copied; interleaved, best of each",
        "",
    ]
    (out / "results.md").write_text("\n".join([*header, *video_table(rows), ""]))


if __name__ == "__main__":
    raise SystemExit(main())
