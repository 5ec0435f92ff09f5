"""Encoding BGR frames into a video file at given timestamps through PyAV, with the input's audio alongside.

* The encoder takes each frame's own presentation time (variable-frame-rate input stays VFR), and the input's audio
  packets are muxed in the same pass (:mod:`cliplit.runtime.video_audio`).
* 4:2:0 output (the default: the only kind browsers and phones play) needs even sizes, and H.264 cannot crop a
  single pixel, so an odd-sized frame is padded by repeating its last column/row: the output is at most one pixel
  wider and taller and holds every input pixel.
* The output is tagged with the input's colour primaries, transfer function, matrix and range
  (:class:`~cliplit.runtime.video_colour.VideoColour`) and converted to YUV by that matrix and range
  (:func:`~cliplit.runtime.video_colour.bgr_to_frame`): the enhanced frames are still in the input's colour space,
  so a BT.2020 HLG phone clip tagged BT.709 would play washed out.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.runtime.video_audio import AudioCopy
from cliplit.runtime.video_colour import UNSPECIFIED, VideoColour, bgr_to_frame
from cliplit.runtime.video_encoding import EncoderSettings, format_for

_MP4_LIKE = (".mp4", ".mov", ".m4v")


class VideoWriter:
    """Encode BGR frames at given timestamps into a video file and copy ``audio_from``'s audio streams beside them,
    interleaved by time, in one pass."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        *,
        time_base: Fraction,
        rate: Fraction,
        settings: EncoderSettings,
        audio_from: Path | None = None,
        colour: VideoColour | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = (height, width, 3)
        self.settings = settings
        self.time_base = time_base
        self.colour = colour or VideoColour()
        self.frames = 0
        self.end_time = 0.0
        #: (primaries, transfer, matrix, range) the output is tagged with (see :meth:`VideoColour.output_tags`)
        self.output_colour = self.colour.output_tags(rgb=av.VideoFormat(settings.pix_fmt).is_rgb)
        suffix = self.path.suffix.lower()
        options = {"movflags": "+faststart"} if suffix in _MP4_LIKE else {}
        try:
            self._container = av.open(str(self.path), "w", format=format_for(suffix), options=options)
            self._stream = self._add_video_stream(width, height, rate)
            self._audio = AudioCopy(self._container, audio_from, suffix) if audio_from is not None else None
        except av.FFmpegError as error:
            raise self._failure(error) from error

    def _add_video_stream(self, width: int, height: int, rate: Fraction) -> av.VideoStream:
        settings = self.settings
        stream = self._container.add_stream(settings.codec, rate=rate)
        stream.width, stream.height = settings.coded_size(width, height)
        stream.pix_fmt = settings.pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        options = {}
        if settings.crf is not None:
            options["crf"] = str(settings.crf)
        if settings.preset is not None:
            options["preset"] = settings.preset
        if settings.codec == "libvpx-vp9":
            options["b"] = "0"  # constant quality
        if settings.codec == "libx265":
            options["x265-params"] = "log-level=error"  # x265 prints two dozen lines of settings otherwise
        stream.options = options
        # Say how the pixels are to be shown, so players do not guess (and guess differently).
        primaries, transfer, matrix, color_range = self.output_colour
        context = stream.codec_context
        if primaries != UNSPECIFIED:
            context.color_primaries = primaries
        if transfer != UNSPECIFIED:
            context.color_trc = transfer
        if matrix is not None:
            context.colorspace, context.color_range = matrix, color_range
        return stream

    def write(self, image: np.ndarray, pts: int, duration: int | None = None) -> None:
        if image.shape != self.shape:
            raise CliplitError(
                f"frame {self.frames} is {image.shape[1]}x{image.shape[0]}, but the video is "
                f"{self.shape[1]}x{self.shape[0]}: a video cannot change size"
            )
        primaries, transfer, matrix, color_range = self.output_colour
        # YUV: converted by the matrix and range the stream is tagged with
        frame = bgr_to_frame(self._padded(image), self.settings.pix_fmt, matrix, color_range)
        # Tags only (reformat's dst_color_trc/dst_color_primaries would ask swscale to convert).
        frame.color_primaries, frame.color_trc = primaries, transfer
        frame.pts, frame.time_base = pts, self.time_base
        if duration:
            frame.duration = duration
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.end_time = max(self.end_time, float((pts + (duration or 0)) * self.time_base))
            if self._audio is not None:
                self._audio.copy_until(float(pts * self.time_base))
        except av.FFmpegError as error:
            raise self._failure(error) from error
        self.frames += 1

    def _padded(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        coded_width, coded_height = self.settings.coded_size(width, height)
        if (coded_width, coded_height) == (width, height):
            return image
        return np.pad(image, ((0, coded_height - height), (0, coded_width - width), (0, 0)), mode="edge")

    def close(self, *, audio_until: float | None = None) -> None:
        """Flush the encoder, add the rest of the audio (up to ``audio_until`` seconds, or all of it) and finish the
        file; raise a clear error if that fails."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.finish(audio_until)
            self._container.close()
        except (av.FFmpegError, OSError) as error:
            raise self._failure(error) from error

    def abort(self) -> None:
        """Stop at once (the caller deletes the partial file)."""
        if self._audio is not None:
            self._audio.close()
        with contextlib.suppress(av.FFmpegError, OSError):  # the file is being thrown away; its trailer does not matter
            self._container.close()

    def _failure(self, error: Exception) -> CliplitError:
        if isinstance(error, OSError) and error.errno:  # the file system (a full disk), not the options
            return CliplitError(f"encoding failed: {error.strerror or error}")
        settings = self.settings
        options = f"--codec {settings.codec} --pix-fmt {settings.pix_fmt}"
        if settings.crf is not None:
            options += f" --crf {settings.crf}"
        if settings.preset is not None:
            options += f" --preset {settings.preset}"
        why = getattr(error, "strerror", None) or str(error)
        return CliplitError(f"encoding failed with {options} into a {self.path.suffix} file: {why}")
