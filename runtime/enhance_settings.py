"""The options of ``cliplit enhance`` (beside the model choice) in one dataclass: inputs and outputs, batching and
memory, quality and speed, cameras and streams, output encoding.

The command's flags, their defaults and help derive from these fields (``cliplit.core.cli_settings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliplit.core.cli_settings import setting
from cliplit.core.errors import CliplitError
from cliplit.runtime.memory import parse_memory_size
from cliplit.runtime.upsample import UPSAMPLE_METHODS
from cliplit.runtime.video_encoding import DEFAULT_CRF, DEFAULT_PRESET

#: the option groups of --help, each starting at the field named (ModelChoice's flags fill "model" first)
GROUPS = {
    "batch": "model",
    "scale": "quality and speed",
    "realtime": "cameras and streams",
    "ext": "output encoding",
}


@dataclass(frozen=True)
class EnhanceSettings:
    """What ``cliplit enhance`` reads and writes, and how it runs the model over it."""

    inputs: tuple[str, ...] = setting(
        (), "images, folders of images, a video or a stream URL", names=("inputs",), nargs="*", metavar="INPUT"
    )
    output: Path | None = setting(  # noqa: RUF009 (setting makes a field)
        None, "output folder (images) or video file", names=("-o", "--output")
    )
    camera: int | None = setting(None, "read camera INDEX (0 is the first) instead", metavar="INDEX")
    overwrite: bool = setting(False, "replace existing output files")
    recursive: bool = setting(
        False, "enhance the images in an input folder's subfolders too, mirroring them under the output folder"
    )

    batch: int = setting(1, "frames per network call")
    max_memory: int | None = setting(
        None,
        "memory budget of the run, e.g. 2G or 512M: frames that would need more run in tiles, with the same "
        "result (default: what the process holds plus half of the free memory)",
        metavar="SIZE",
        type=str,
        parse=parse_memory_size,
    )

    scale: float = setting(
        1.0, "run the network at this fraction of the resolution and upsample its light map", default_text="1"
    )
    upsample: str = setting(
        "bilinear",
        "light-map upsampling for --scale (default: bilinear; guided measured better only at 0.25)",
        choices=UPSAMPLE_METHODS,
    )
    temporal_smoothing: float = setting(
        0.0,
        "fixed cameras: average the light map over time where nothing moves, L = A*L_prev + (1-A)*L "
        "(0: off; 0.9 measured best); restarts on scene cuts",
        metavar="A",
        default_text="0, off",
    )

    realtime: bool = setting(False, "drop stale frames instead of falling behind")
    show: bool = setting(False, "show the enhanced frames in a window (q to stop)")
    max_frames: int | None = setting(None, "stop after this many frames")
    fps: float | None = setting(None, "frame rate to record when the source reports none")
    reconnect: int = setting(3, "reopen attempts when a stream drops")

    ext: str = setting("png", "image output format: png (lossless), jpg, webp, tif, bmp")
    codec: str | None = setting(None, "ffmpeg video codec (default: libx264; libvpx-vp9 for .webm)")
    crf: int | None = setting(
        None, "x264/x265 (0-51) or vp9 (0-63) quality, lower is better", default_text=str(DEFAULT_CRF)
    )
    preset: str | None = setting(None, "x264/x265 speed preset", default_text=DEFAULT_PRESET)
    pix_fmt: str | None = setting(
        None,
        "output pixel format (default: yuv420p, which every player takes; an odd width or height is padded by "
        "one pixel; yuv444p keeps odd sizes but browsers and phones do not play it)",
    )
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.batch < 1:  # images too: a batch of 0 would never run a frame
            raise CliplitError(f"--batch must be at least 1, got {self.batch}")
