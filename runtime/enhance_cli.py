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
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cliplit.core.atomic import check_writable
from cliplit.core.errors import CliplitError
from cliplit.core.images import IMAGE_SUFFIXES, PILLOW_SUFFIXES, Photo, is_image_path, photo_losses, read_photo
from cliplit.core.text import plural
from cliplit.runtime.backends import BACKEND_CHOICES, options_for, select_backend
from cliplit.runtime.backends.openvino import PRECISIONS, OpenVinoOptions
from cliplit.runtime.sinks import ImageSink
from cliplit.runtime.sources import MOTION_SUFFIXES, ImageSource, Item, is_stream_url
from cliplit.runtime.upsample import UPSAMPLE_METHODS
from cliplit.runtime.video_encoding import DEFAULT_CRF, DEFAULT_PRESET, EncoderSettings, encoder_settings

if TYPE_CHECKING:
    from cliplit.runtime.enhancer import Enhancer
    from cliplit.runtime.pipeline import PipelineStats

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm"})
#: the base install runs this command (torch only for --backend torch or a first export, which say so themselves)
EXTRA = None
#: frame rate of a recording from a camera or stream that does not report one (and no --fps)
FALLBACK_FPS = 30
#: subfolders named when a folder's are skipped (without --recursive); the rest are counted
NAMED_SUBFOLDERS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="images, folders of images, a video or a stream URL")
    parser.add_argument("-o", "--output", type=Path, help="output folder (images) or video file")
    parser.add_argument("--camera", type=int, metavar="INDEX", help="read camera INDEX (0 is the first) instead")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--recursive",
        action="store_true",
        help="enhance the images in an input folder's subfolders too, mirroring them under the output folder",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=None,
        help="an .onnx or .engine file, or weights (.pth or a released name) to run; default: the released "
        "CLIP-LIT weights as a cached ONNX model",
    )
    model.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="inference backend (default: auto)")
    model.add_argument(
        "--threads", type=int, default=None, help="CPU threads for OpenVINO/ONNX Runtime/torch (default: all)"
    )
    model.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="OpenVINO inference precision (default: bf16 on CPUs with native bf16, AVX512_BF16 or AMX, else fp32; "
        "fp32 forces full precision on any backend)",
    )
    model.add_argument("--device", type=int, default=0, help="GPU index for TensorRT and CUDA (default: 0)")
    model.add_argument("--batch", type=int, default=1, help="frames per network call (default: 1)")
    model.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="memory budget of the run, e.g. 2G or 512M: frames that would need more run in tiles, with the same "
        "result (default: what the process holds plus half of the free memory)",
    )

    speed = parser.add_argument_group("quality and speed")
    speed.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="run the network at this fraction of the resolution and upsample its light map (default: 1)",
    )
    speed.add_argument(
        "--upsample",
        choices=UPSAMPLE_METHODS,
        default="bilinear",
        help="light-map upsampling for --scale (default: bilinear; guided measured better only at 0.25)",
    )
    speed.add_argument(
        "--temporal-smoothing",
        type=float,
        default=0.0,
        metavar="A",
        help="fixed cameras: average the light map over time where nothing moves, L = A*L_prev + (1-A)*L "
        "(0 = off, the default; 0.9 measured best); restarts on scene cuts",
    )

    live = parser.add_argument_group("cameras and streams")
    live.add_argument("--realtime", action="store_true", help="drop stale frames instead of falling behind")
    live.add_argument("--show", action="store_true", help="show the enhanced frames in a window (q to stop)")
    live.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    live.add_argument("--fps", type=float, default=None, help="frame rate to record when the source reports none")
    live.add_argument("--reconnect", type=int, default=3, help="reopen attempts when a stream drops (default: 3)")

    out = parser.add_argument_group("output encoding")
    out.add_argument("--ext", default="png", help="image output format: png (lossless, default), jpg, webp, tif, bmp")
    out.add_argument("--codec", default=None, help="ffmpeg video codec (default: libx264; libvpx-vp9 for .webm)")
    out.add_argument(
        "--crf", type=int, default=None, help=f"x264/x265 (0-51) or vp9 (0-63) quality, lower is better ({DEFAULT_CRF})"
    )
    out.add_argument("--preset", default=None, help=f"x264/x265 speed preset (default: {DEFAULT_PRESET})")
    out.add_argument(
        "--pix-fmt",
        default=None,
        help="output pixel format (default: yuv420p, which every player takes; an odd width or height is padded by "
        "one pixel; yuv444p keeps odd sizes but browsers and phones do not play it)",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass
class _Plan:
    """What a run will read and write, checked before any model is loaded."""

    mode: str  # "images", "video" or "live"
    images: list[Path] | None = None
    outputs: list[Path] | None = None
    video: Path | None = None
    stream: int | str | None = None
    encoder: EncoderSettings | None = None


def run(args: argparse.Namespace) -> int:
    from cliplit.runtime.memory import parse_memory_size

    max_memory = parse_memory_size(args.max_memory) if args.max_memory is not None else None
    if args.batch < 1:  # images too: a batch of 0 would never run a frame
        raise CliplitError(f"--batch must be at least 1, got {args.batch}")
    plan = _plan(args)
    from cliplit.runtime.enhancer import Enhancer

    name = select_backend(args.model, args.backend)
    backend = options_for(name, threads=args.threads, device=args.device, precision=args.precision)
    if args.precision not in (None, "fp32") and not isinstance(backend, OpenVinoOptions):
        raise CliplitError(
            f"--precision {args.precision} applies to --backend openvino, not {name} (ONNX Runtime and torch run "
            "FP32; a TensorRT engine runs in the precision it was built with)"
        )
    with Enhancer.open(
        args.model,
        backend,
        scale=args.scale,
        upsample=args.upsample,
        temporal_smoothing=args.temporal_smoothing,
        max_memory=max_memory,
    ) as enhancer:
        print(f"enhancer: {enhancer.describe()}", file=sys.stderr)
        if plan.mode == "images":
            return _run_images(plan, enhancer, args)
        return _run_video(plan, enhancer, args)


def _plan(args: argparse.Namespace) -> _Plan:
    if args.camera is not None:
        if args.inputs:
            raise CliplitError("give either --camera or INPUT, not both")
        return _live_plan(args, args.camera)
    if not args.inputs:
        raise CliplitError("nothing to enhance: give images, a folder, a video, a stream URL or --camera N")
    streams = [text for text in args.inputs if is_stream_url(text)]
    if streams:
        if len(args.inputs) != 1:
            raise CliplitError("a stream URL must be the only input")
        return _live_plan(args, streams[0])
    paths = [Path(text) for text in args.inputs]
    for path in paths:
        if not path.exists():
            raise CliplitError(f"{path}: no such file or folder")
    videos = [path for path in paths if path.is_file() and not is_image_path(path)]
    if videos:
        if len(paths) != 1:
            raise CliplitError(f"a video must be the only input (got {len(paths)} inputs); run once per video")
        return _video_plan(args, videos[0])
    return _image_plan(args, paths)


def _image_plan(args: argparse.Namespace, paths: list[Path]) -> _Plan:
    if args.temporal_smoothing or args.realtime or args.show:
        raise CliplitError("--temporal-smoothing, --realtime and --show are for videos and live sources, not images")
    if args.output is None:
        raise CliplitError("give an output folder with -o")
    # each image with the folder its output goes to, relative to -o: a subfolder's images mirror the input tree
    found = [
        (image, image.parent.relative_to(path) if path.is_dir() else Path())
        for path in paths
        for image in (_folder_images(path, args.recursive, args.output) if path.is_dir() else [path])
    ]
    images = [image for image, _ in found]
    ext = "." + args.ext.lower().lstrip(".")
    if ext not in IMAGE_SUFFIXES:
        raise CliplitError(f"--ext {args.ext}: not an image format; use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    if len(images) == 1 and is_image_path(args.output) and not args.output.is_dir():
        outputs = [args.output]
    else:
        if args.output.is_file():
            raise CliplitError(f"{args.output} is a file; for images -o names a folder")
        outputs = [args.output / subfolder / f"{image.stem}{ext}" for image, subfolder in found]
    seen: dict[Path, Path] = {}
    for image, output in zip(images, outputs, strict=True):
        if _is_motion(image):  # refused when its turn comes; never written
            continue
        if output.resolve() in seen:
            raise CliplitError(f"{image} and {seen[output.resolve()]} would both be written to {output}")
        if output.resolve() == image.resolve():
            raise CliplitError(f"{output} would replace its own input; choose another output folder")
        seen[output.resolve()] = image
        check_writable(output, args.overwrite)
    return _Plan("images", images=images, outputs=outputs)


def _folder_images(folder: Path, recursive: bool, output: Path) -> list[Path]:
    """The images of ``folder`` (and of its subfolders with ``recursive``, except ``output`` when it lies inside, so
    a second run does not enhance the first one's results), and its GIFs and videos, so that they are reported (as
    needing a run of their own) rather than skipped without a word. For the same reason, the subfolders skipped
    without ``recursive`` are named in one line."""
    if recursive:
        files = []
        for root, folders, names in os.walk(folder):  # symbolic links to folders are not followed: no cycles
            folders[:] = [name for name in folders if not _same_folder(Path(root) / name, output)]
            files += [Path(root) / name for name in names]
    else:
        files = list(folder.iterdir())
    found = sorted(p for p in files if p.is_file() and (is_image_path(p) or _is_motion(p)))
    skipped = [] if recursive else sorted(p.name for p in files if p.is_dir() and not _same_folder(p, output))
    if not found:
        hint = f"; --recursive looks in its {plural(len(skipped), 'subfolder')}" if skipped else ""
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES | PILLOW_SUFFIXES))
        raise CliplitError(f"{folder}: no images in this folder ({suffixes}){hint}")
    if skipped:
        named = ", ".join(skipped[:NAMED_SUBFOLDERS]) + (", ..." if len(skipped) > NAMED_SUBFOLDERS else "")
        print(
            f"{folder}: skipping {plural(len(skipped), 'subfolder')} ({named}); --recursive enhances them too",
            file=sys.stderr,
        )
    return found


def _same_folder(folder: Path, other: Path) -> bool:
    return folder.resolve() == other.resolve()


def _is_motion(path: Path) -> bool:
    return path.suffix.lower() in MOTION_SUFFIXES


def _video_plan(args: argparse.Namespace, video: Path) -> _Plan:
    if args.realtime:
        raise CliplitError("--realtime is for cameras and streams; a file is always processed frame by frame")
    output = _video_output(args, required=True)
    if output.resolve() == video.resolve():
        raise CliplitError(f"{output} would replace its own input; choose another output file")
    return _Plan("video", video=video, outputs=[output], encoder=_encoder(args, output))


def _live_plan(args: argparse.Namespace, stream: int | str) -> _Plan:
    output = _video_output(args, required=not args.show)
    if output is None:
        return _Plan("live", stream=stream, outputs=[])
    return _Plan("live", stream=stream, outputs=[output], encoder=_encoder(args, output))


def _encoder(args: argparse.Namespace, output: Path) -> EncoderSettings:
    """The output options, checked before any model is loaded or frame decoded."""
    return encoder_settings(output, args.codec, args.crf, args.preset, args.pix_fmt)


def _video_output(args: argparse.Namespace, *, required: bool) -> Path | None:
    if args.output is None:
        if required:
            raise CliplitError("give an output video with -o (e.g. -o enhanced.mp4)")
        return None
    if args.output.suffix.lower() not in VIDEO_SUFFIXES:
        raise CliplitError(
            f"{args.output}: a video output needs one of the suffixes {', '.join(sorted(VIDEO_SUFFIXES))}"
        )
    return check_writable(args.output, args.overwrite)


def _run_images(plan: _Plan, enhancer: Enhancer, args: argparse.Namespace) -> int:
    from cliplit.runtime.pipeline import Pipeline

    notes = _Notes()
    sink = _PhotoSink(plan.outputs, notes, overwrite=args.overwrite)
    photos = _PhotoEnhancer(enhancer, notes)
    pipeline = Pipeline(_PhotoSource(plan.images), photos, sink, tolerate_errors=True, progress=not args.no_progress)
    stats = pipeline.run()
    print(stats.summary())
    if sink.failures:
        raise CliplitError(
            f"{len(sink.failures)} of {plural(len(plan.images), 'image')} failed (the others were written):\n  "
            + "\n  ".join(sink.failures)
        )
    return _interrupted_status(stats)


def _run_video(plan: _Plan, enhancer: Enhancer, args: argparse.Namespace) -> int:
    from cliplit.runtime.pipeline import Pipeline
    from cliplit.runtime.sinks import PreviewWindow, VideoSink
    from cliplit.runtime.sources import CaptureSource, VideoFileSource

    with ExitStack() as stack:
        if plan.mode == "video":
            source = VideoFileSource(plan.video)
        else:
            source = CaptureSource(plan.stream, reconnect=args.reconnect)
        stack.callback(source.close)
        print(f"input: {source.description}", file=sys.stderr)
        sink = None
        if plan.outputs:
            fps = source.fps or (Fraction(args.fps).limit_denominator(1001) if args.fps else None)
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
                    overwrite=args.overwrite,
                    fill_gaps=args.realtime,
                )
            )
        preview = None
        if args.show:
            window = PreviewWindow()
            stack.callback(window.close)
            preview = window.show
        pipeline = Pipeline(
            source,
            enhancer,
            sink if sink is not None else _Discard(),
            realtime=args.realtime,
            batch_size=args.batch,
            max_frames=args.max_frames,
            progress=not args.no_progress,
            preview=preview,
        )
        stats = pipeline.run()
        if sink is not None:
            stopped = stats.stopped or args.max_frames is not None or source.ended_by is not None
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


class _Notes:
    """One-line warnings on stderr, each said once per run: every image of a folder would repeat it."""

    def __init__(self) -> None:
        self._said: set[str] = set()
        self._lock = threading.Lock()  # the inference and the encoding threads both say things

    def say(self, message: str, where: object = None) -> None:
        with self._lock:
            if message in self._said:
                return
            self._said.add(message)
        print(f"warning: {where}: {message}" if where is not None else f"warning: {message}", file=sys.stderr)


class _PhotoSource(ImageSource):
    """The images as whole :class:`Photo` items (``read_photo``): depth, alpha, colour profile and EXIF travel with
    the pixels through the pipeline to :class:`_PhotoSink`."""

    def items(self) -> Iterator[Item]:
        for index, path in enumerate(self.paths):
            if _is_motion(path):  # ImageSource's item says how to enhance it instead
                yield replace(next(ImageSource([path]).items()), index=index)
                continue
            try:
                yield Item(index, read_photo(path), name=str(path))
            except CliplitError as error:
                yield Item(index, None, name=str(path), error=str(error))


class _PhotoEnhancer:
    """The enhancer as the image pipeline calls it (a ``tolerate_errors`` pipeline calls ``enhance`` on each item,
    and sets ``on_tile`` for its progress bar): takes and gives a whole :class:`Photo`, and enhances a 16-bit photo
    at 16 bits where the model allows, saying once why not where it does not."""

    def __init__(self, enhancer: Enhancer, notes: _Notes) -> None:
        self.enhancer = enhancer
        self.notes = notes

    @property
    def on_tile(self) -> object:
        return self.enhancer.on_tile

    @on_tile.setter
    def on_tile(self, callback: object) -> None:
        self.enhancer.on_tile = callback

    def enhance(self, photo: Photo) -> Photo:
        if photo.pixels.dtype == np.uint16:
            reason = self.enhancer.reason_for_8bit()
            if reason is None:
                return replace(photo, pixels=self.enhancer.enhance_16bit(photo.pixels))
            self.notes.say(f"16-bit input written as 8-bit: {reason}")
        return replace(photo, pixels=self.enhancer.enhance(photo.pixels))


class _PhotoSink(ImageSink):
    """Writes each photo with what its format holds of it (``write_image``), then says what the format dropped."""

    def __init__(self, outputs: list[Path], notes: _Notes, *, overwrite: bool = False) -> None:
        super().__init__(outputs, overwrite=overwrite)
        self.notes = notes

    def write(self, item: Item) -> None:
        super().write(item)
        if item.error is None:
            path = self.outputs[item.index]
            for loss in photo_losses(item.image, path):
                self.notes.say(loss, path)
