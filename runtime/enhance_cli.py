"""Enhance backlit images, videos, cameras and streams with CLIP-LIT.

INPUT is one or more images or folders of images (written to the OUTPUT folder under the same names, as PNG by
default, keeping their alpha channel, 16 bits, colour profile and EXIF where the output format holds them; with
--recursive a folder's subfolders too, mirrored under OUTPUT), a video file (written to the OUTPUT video, keeping its
frame rate, size, frame count and audio), a stream URL (rtsp://, http://, ...) or, with --camera, a camera. Without
--model the released CLIP-LIT weights run as an ONNX model cached in $CLIPLIT_HOME/models (exported on first use if
PyTorch is installed).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from fractions import Fraction
from typing import TYPE_CHECKING

from cliplit.core.cli_settings import SettingsCli
from cliplit.core.errors import CliplitError
from cliplit.core.text import plural
from cliplit.runtime.backends.openvino import OpenVinoOptions
from cliplit.runtime.enhance_plan import Plan, plan_run
from cliplit.runtime.enhance_settings import GROUPS, EnhanceSettings
from cliplit.runtime.model_choice import ModelChoice

if TYPE_CHECKING:
    from cliplit.runtime.enhancer import Enhancer
    from cliplit.runtime.pipeline import PipelineStats

#: the base install runs this command (torch only for --backend torch or a first export, which say so themselves)
EXTRA = None
#: frame rate of a recording from a camera or stream that does not report one (and no --fps)
FALLBACK_FPS = 30
MODEL = SettingsCli(ModelChoice, groups={"model": "model"})
ENHANCE = SettingsCli(EnhanceSettings, groups=GROUPS)
#: the settings this command's flags come from (tests/test_cli_help.py checks each field has its flag)
SETTINGS = (MODEL, ENHANCE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for options in SETTINGS:
        options.add_to(parser)


def run(args: argparse.Namespace) -> int:
    settings: EnhanceSettings = ENHANCE.from_args(args)
    plan = plan_run(settings)
    from cliplit.runtime.enhancer import Enhancer

    choice: ModelChoice = MODEL.from_args(args)
    backend = choice.backend_options()
    if choice.precision not in (None, "fp32") and not isinstance(backend, OpenVinoOptions):
        raise CliplitError(
            f"--precision {choice.precision} applies to --backend openvino, not {choice.backend_name()} (ONNX Runtime "
            "and torch run FP32; a TensorRT engine runs in the precision it was built with)"
        )
    with Enhancer.open(
        choice.model,
        backend,
        scale=settings.scale,
        upsample=settings.upsample,
        temporal_smoothing=settings.temporal_smoothing,
        max_memory=settings.max_memory,
    ) as enhancer:
        print(f"enhancer: {enhancer.describe()}", file=sys.stderr)
        if plan.mode == "images":
            return _run_images(plan, enhancer, settings)
        return _run_video(plan, enhancer, settings)


def _run_images(plan: Plan, enhancer: Enhancer, settings: EnhanceSettings) -> int:
    from cliplit.runtime.photo_pipeline import Notes, PhotoEnhancer, PhotoSink, PhotoSource
    from cliplit.runtime.pipeline import Pipeline

    notes = Notes()
    sink = PhotoSink(plan.outputs, notes, overwrite=settings.overwrite)
    photos = PhotoEnhancer(enhancer, notes)
    pipeline = Pipeline(PhotoSource(plan.images), photos, sink, tolerate_errors=True, progress=settings.progress)
    stats = pipeline.run()
    print(stats.summary())
    if sink.failures:
        raise CliplitError(
            f"{len(sink.failures)} of {plural(len(plan.images), 'image')} failed (the others were written):\n  "
            + "\n  ".join(sink.failures)
        )
    return _interrupted_status(stats)


def _run_video(plan: Plan, enhancer: Enhancer, settings: EnhanceSettings) -> int:
    from cliplit.runtime.pipeline import Pipeline
    from cliplit.runtime.sinks import PreviewWindow, VideoSink
    from cliplit.runtime.sources import CaptureSource, VideoFileSource

    with ExitStack() as stack:
        if plan.mode == "video":
            source = VideoFileSource(plan.video)
        else:
            source = CaptureSource(plan.stream, reconnect=settings.reconnect)
        stack.callback(source.close)
        print(f"input: {source.description}", file=sys.stderr)
        sink = None
        if plan.outputs:
            fps = source.fps or (Fraction(settings.fps).limit_denominator(1001) if settings.fps else None)
            if not fps:
                fps = Fraction(FALLBACK_FPS)
                print(
                    f"{source.description} reports no frame rate; recording at {fps} fps (set --fps)", file=sys.stderr
                )
            sink = stack.enter_context(
                VideoSink(
                    plan.outputs[0],
                    fps,
                    settings=plan.encoder,
                    time_base=source.time_base,
                    audio_from=plan.video if plan.mode == "video" and source.info.has_audio else None,
                    overwrite=settings.overwrite,
                    fill_gaps=settings.realtime,
                )
            )
        preview = None
        if settings.show:
            window = PreviewWindow()
            stack.callback(window.close)
            preview = window.show
        pipeline = Pipeline(
            source,
            enhancer,
            sink if sink is not None else _Discard(),
            realtime=settings.realtime,
            batch_size=settings.batch,
            max_frames=settings.max_frames,
            progress=settings.progress,
            preview=preview,
        )
        stats = pipeline.run()
        if sink is not None:
            stopped = stats.stopped or settings.max_frames is not None or source.ended_by is not None
            sink.finish(stopped_early=stopped)
    print(stats.summary())
    if sink is not None:
        print(f"wrote {plan.outputs[0]} ({plural(sink.frames, 'frame')})")
    if source.ended_by:
        kept = f"{plan.outputs[0]} holds them and plays" if sink is not None else "nothing was recorded (no -o)"
        print(f"error: {source.ended_by}; {kept}", file=sys.stderr)
        return 1
    return _interrupted_status(stats)


def _interrupted_status(stats: PipelineStats) -> int:
    """0, or 128 + the signal that stopped the run (130 for Ctrl-C, 143 for SIGTERM), as shells report it."""
    return 128 + stats.signal if stats.signal else 0


class _Discard:
    """The sink of a --show run without -o."""

    def write(self, item: object) -> None:
        pass
