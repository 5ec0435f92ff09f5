"""Video files through ffmpeg pipes: decoding to BGR frames, encoding BGR frames, remuxing the audio track.

The ffmpeg binary is the one imageio-ffmpeg ships on PyPI, so no system ffmpeg is needed. Files are decoded with
``-fps_mode passthrough``: every decoded frame comes out exactly once, in presentation order, never duplicated or
dropped to fit a frame rate, which is what makes the runtime lossless for files (OpenCV's reader gives the same
frames but only an estimated frame rate and count). Encoding is a second ffmpeg reading raw BGR from a pipe; the
audio is copied from the input afterwards in a fast stream-copy pass (re-encoded only if the container cannot hold
the original codec), so an interrupted encode still gets its audio.

ffmpeg children run in their own session: Ctrl-C goes to cliplit alone, which finishes the file cleanly.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO

import imageio_ffmpeg
import numpy as np

from cliplit.core.errors import CliplitError

#: default video codec per output suffix (anything else: libx264)
CODEC_BY_SUFFIX = {".webm": "libvpx-vp9"}
#: audio codec to re-encode to when the container refuses a stream copy
AUDIO_FALLBACK_BY_SUFFIX = {".webm": "libopus", ".ogg": "libopus"}
#: codecs that store RGB losslessly, with the pixel format each takes
RGB_PIX_FMT = {"ffv1": "bgr0", "libx264rgb": "bgr24", "png": "rgb24"}
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    """What the runtime needs to know about an input video."""

    width: int
    height: int
    fps: Fraction
    duration: float
    has_audio: bool

    @property
    def estimated_frames(self) -> int | None:
        """Frame count from duration × rate (for the progress bar; the exact count is whatever decodes)."""
        return round(self.duration * self.fps) if self.duration > 0 and self.fps > 0 else None


def exact_rate(fps: float) -> Fraction:
    """ffmpeg prints rates with two decimals; recover the exact NTSC rates (30000/1001, ...) from them.

    A rate that is within rounding of N·1000/1001 is taken to be that; anything else is read as printed.
    """
    if fps <= 0:
        return Fraction(0)
    ntsc = Fraction(round(fps * 1001 / 1000) * 1000, 1001)
    if round(float(ntsc), 2) == round(fps, 2) and ntsc.denominator == 1001:
        return ntsc
    return Fraction(fps).limit_denominator(1000)


class VideoReader:
    """Decode a video file to H×W×3 uint8 BGR frames, all of them, in order."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CliplitError(f"{self.path}: no such file")
        self._frames = imageio_ffmpeg.read_frames(
            str(self.path),
            pix_fmt="bgr24",
            output_params=["-fps_mode", "passthrough", "-an", "-sn", "-dn"],
        )
        try:
            meta = next(self._frames)
        except (OSError, RuntimeError, IndexError, StopIteration, ValueError) as error:
            # IOError from imageio-ffmpeg when ffmpeg cannot open it; IndexError when there is no video stream
            self._frames.close()
            raise CliplitError(f"{self.path}: not a readable video (corrupt, truncated or not a video)") from error
        width, height = meta["size"]
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=exact_rate(float(meta.get("fps") or 0)),
            duration=float(meta.get("duration") or 0),
            has_audio="audio_codec" in meta,
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        shape = (self.info.height, self.info.width, 3)
        try:
            for data in self._frames:
                yield np.frombuffer(data, dtype=np.uint8).reshape(shape)
        except RuntimeError as error:  # imageio-ffmpeg: the stream ended in the middle of a frame
            raise CliplitError(f"{self.path}: decoding failed ({error})") from error

    def close(self) -> None:
        self._frames.close()


def default_pix_fmt(codec: str, width: int, height: int) -> str:
    """RGB for the lossless RGB codecs; else 4:2:0 (plays everywhere) for even sizes and 4:4:4 for odd ones, which
    4:2:0 cannot hold."""
    if codec in RGB_PIX_FMT:
        return RGB_PIX_FMT[codec]
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


class VideoEncoder:
    """An ffmpeg process turning raw BGR frames written to it into a video file (no audio)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: Fraction,
        *,
        codec: str | None = None,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        pix_fmt: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = (height, width, 3)
        self.frames = 0
        codec = codec or CODEC_BY_SUFFIX.get(self.path.suffix.lower(), "libx264")
        pix_fmt = pix_fmt or default_pix_fmt(codec, width, height)
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        command += ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", str(fps)]
        command += ["-i", "-", "-c:v", codec, *_quality_options(codec, crf, preset)]
        if pix_fmt.startswith("yuv"):
            # Convert with the BT.709 matrix and say so, so players do not guess (and guess differently).
            tags = "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"
            command += ["-vf", f"scale=out_color_matrix=bt709:out_range=tv,format={pix_fmt},{tags}"]
        else:
            command += ["-pix_fmt", pix_fmt]
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            command += ["-movflags", "+faststart"]
        command.append(str(self.path))
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - ffmpeg's stderr for the encoder's lifetime; closed in close/abort
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log, **_detached()
        )

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape:
            raise CliplitError(
                f"frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, but the video is "
                f"{self.shape[1]}x{self.shape[0]}: a video cannot change size"
            )
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError) as error:
            self._process.wait()
            raise self._failure(f"ffmpeg stopped accepting frames ({error})") from error
        self.frames += 1

    def close(self) -> None:
        """Flush and wait for ffmpeg to finish the file; raise a clear error if it failed."""
        with contextlib.suppress(OSError):  # ffmpeg already exited: its status and log say why
            self._process.stdin.close()
        status = self._process.wait()
        if status != 0:
            raise self._failure(_exit_reason(status))
        self._log.close()

    def abort(self) -> None:
        """Stop ffmpeg at once (the caller deletes the partial file)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._log.close()

    def _failure(self, what: str) -> CliplitError:
        return CliplitError(f"encoding failed: {what}: {_tail(self._log)}")


def remux_audio(video: Path, audio_source: Path, output: Path, *, shortest: bool) -> None:
    """Write ``video``'s picture plus ``audio_source``'s audio streams into ``output``, copying both if the
    container allows, else re-encoding only the audio."""
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(video)]
    base += ["-i", str(audio_source), "-map", "0:v:0", "-map", "1:a?", "-c:v", "copy"]
    if shortest:
        base.append("-shortest")
    if output.suffix.lower() in (".mp4", ".mov", ".m4v"):
        base += ["-movflags", "+faststart"]
    fallback = AUDIO_FALLBACK_BY_SUFFIX.get(output.suffix.lower(), "aac")
    errors: list[str] = []
    for audio in ("copy", fallback):
        done = subprocess.run(
            [*base, "-c:a", audio, str(output)], capture_output=True, text=True, check=False, **_detached()
        )
        if done.returncode == 0:
            return
        errors.append(_last_line(done.stderr) if done.returncode > 0 else _exit_reason(done.returncode))
    raise CliplitError(f"adding the audio of {audio_source.name} failed: {errors[-1]}")


def _quality_options(codec: str, crf: int, preset: str) -> list[str]:
    if codec in ("libx264", "libx264rgb", "libx265"):
        return ["-crf", str(crf), "-preset", preset]
    if codec == "libvpx-vp9":
        return ["-crf", str(crf), "-b:v", "0"]
    return []


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return _last_line(log.read().decode(errors="replace"))


def _last_line(stderr: str) -> str:
    """ffmpeg's last message, without its ``[muxer @ 0x...]`` prefix."""
    lines = stderr.strip().splitlines()
    return re.sub(r"^(\[[^\]]*\]\s*)+", "", lines[-1]) if lines else "(ffmpeg printed nothing)"


def _exit_reason(status: int) -> str:
    if status < 0:
        return f"ffmpeg was killed by {signal.Signals(-status).name} ({signal.strsignal(-status)})"
    return f"ffmpeg exited with status {status}"


def _detached() -> dict[str, object]:
    """Popen options that keep Ctrl-C in the terminal from reaching ffmpeg (cliplit stops it in order)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}
