"""What a ``cliplit enhance`` run will read and write, worked out and checked before any model is loaded.

The inputs decide the mode (images, a video file, or a live camera or stream); each mode's outputs are checked here
(suffixes, clashes, an output that would replace its input, files that exist without --overwrite), so that a mistake
costs no model load and no decoding.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cliplit.core.atomic import check_writable
from cliplit.core.errors import CliplitError
from cliplit.core.images import IMAGE_SUFFIXES, PILLOW_SUFFIXES, is_image_path
from cliplit.core.text import plural
from cliplit.runtime.enhance_settings import EnhanceSettings
from cliplit.runtime.sources import MOTION_SUFFIXES, is_stream_url
from cliplit.runtime.video_encoding import EncoderSettings, encoder_settings

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm"})
#: subfolders named when a folder's are skipped (without --recursive); the rest are counted
NAMED_SUBFOLDERS = 3


@dataclass
class Plan:
    """What a run will read and write, checked before any model is loaded."""

    mode: str  # "images", "video" or "live"
    images: list[Path] | None = None
    outputs: list[Path] | None = None
    video: Path | None = None
    stream: int | str | None = None
    encoder: EncoderSettings | None = None


def plan_run(settings: EnhanceSettings) -> Plan:
    """The mode the inputs ask for and its checked outputs (a CliplitError for the first problem found)."""
    if settings.camera is not None:
        if settings.inputs:
            raise CliplitError("give either --camera or INPUT, not both")
        return _live_plan(settings, settings.camera)
    if not settings.inputs:
        raise CliplitError("nothing to enhance: give images, a folder, a video, a stream URL or --camera N")
    streams = [text for text in settings.inputs if is_stream_url(text)]
    if streams:
        if len(settings.inputs) != 1:
            raise CliplitError("a stream URL must be the only input")
        return _live_plan(settings, streams[0])
    paths = [Path(text) for text in settings.inputs]
    for path in paths:
        if not path.exists():
            raise CliplitError(f"{path}: no such file or folder")
    videos = [path for path in paths if path.is_file() and not is_image_path(path)]
    if videos:
        if len(paths) != 1:
            raise CliplitError(f"a video must be the only input (got {len(paths)} inputs); run once per video")
        return _video_plan(settings, videos[0])
    return _image_plan(settings, paths)


def _image_plan(settings: EnhanceSettings, paths: list[Path]) -> Plan:
    if settings.temporal_smoothing or settings.realtime or settings.show:
        raise CliplitError("--temporal-smoothing, --realtime and --show are for videos and live sources, not images")
    if settings.output is None:
        raise CliplitError("give an output folder with -o")
    # each image with the folder its output goes to, relative to -o: a subfolder's images mirror the input tree
    found = [
        (image, image.parent.relative_to(path) if path.is_dir() else Path())
        for path in paths
        for image in (_folder_images(path, settings.recursive, settings.output) if path.is_dir() else [path])
    ]
    images = [image for image, _ in found]
    ext = "." + settings.ext.lower().lstrip(".")
    if ext not in IMAGE_SUFFIXES:
        raise CliplitError(f"--ext {settings.ext}: not an image format; use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    if len(images) == 1 and is_image_path(settings.output) and not settings.output.is_dir():
        outputs = [settings.output]
    else:
        if settings.output.is_file():
            raise CliplitError(f"{settings.output} is a file; for images -o names a folder")
        outputs = [settings.output / subfolder / f"{image.stem}{ext}" for image, subfolder in found]
    seen: dict[Path, Path] = {}
    for image, output in zip(images, outputs, strict=True):
        if is_motion(image):  # refused when its turn comes; never written
            continue
        if output.resolve() in seen:
            raise CliplitError(f"{image} and {seen[output.resolve()]} would both be written to {output}")
        if output.resolve() == image.resolve():
            raise CliplitError(f"{output} would replace its own input; choose another output folder")
        seen[output.resolve()] = image
        check_writable(output, settings.overwrite)
    return Plan("images", images=images, outputs=outputs)


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
    found = sorted(p for p in files if p.is_file() and (is_image_path(p) or is_motion(p)))
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


def is_motion(path: Path) -> bool:
    return path.suffix.lower() in MOTION_SUFFIXES


def _video_plan(settings: EnhanceSettings, video: Path) -> Plan:
    if settings.realtime:
        raise CliplitError("--realtime is for cameras and streams; a file is always processed frame by frame")
    output = _video_output(settings, required=True)
    if output.resolve() == video.resolve():
        raise CliplitError(f"{output} would replace its own input; choose another output file")
    return Plan("video", video=video, outputs=[output], encoder=_encoder(settings, output))


def _live_plan(settings: EnhanceSettings, stream: int | str) -> Plan:
    output = _video_output(settings, required=not settings.show)
    if output is None:
        return Plan("live", stream=stream, outputs=[])
    return Plan("live", stream=stream, outputs=[output], encoder=_encoder(settings, output))


def _encoder(settings: EnhanceSettings, output: Path) -> EncoderSettings:
    """The output options, checked before any model is loaded or frame decoded."""
    return encoder_settings(output, settings.codec, settings.crf, settings.preset, settings.pix_fmt)


def _video_output(settings: EnhanceSettings, *, required: bool) -> Path | None:
    if settings.output is None:
        if required:
            raise CliplitError("give an output video with -o (e.g. -o enhanced.mp4)")
        return None
    if settings.output.suffix.lower() not in VIDEO_SUFFIXES:
        raise CliplitError(
            f"{settings.output}: a video output needs one of the suffixes {', '.join(sorted(VIDEO_SUFFIXES))}"
        )
    return check_writable(settings.output, settings.overwrite)
