"""Decoding a video file to BGR frames with their timestamps, through PyAV (FFmpeg's libraries).

Why PyAV rather than pipes to an ffmpeg process (what cliplit used before): a pipe of raw frames carries no
timestamps, so the encoder had to assume a constant frame rate and variable-frame-rate input (what phones record) came
out re-timed and out of sync with its audio. PyAV hands over every decoded frame with its presentation time, lets the
encoder take the same times (VFR stays VFR; :mod:`cliplit.runtime.video_write`), and reports decoding errors as
exceptions instead of lines on stderr. Measured against the pipes in docs/runtime.md.

* Every decoded frame comes out exactly once, in presentation order; a display-rotation tag (portrait phone video)
  is applied, as players and the ffmpeg command do, so frames are upright.
* Frames are converted to BGR by the matrix and range they are tagged with
  (:func:`cliplit.runtime.video_colour.frame_to_bgr`, the conversion the GStreamer element shares).
* A truncated or damaged input does not stop at an exception: decoding goes on past bad packets, and
  :attr:`VideoReader.damage` then says what was lost and how many frames were recovered.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.core.text import plural
from cliplit.runtime.video_colour import VideoColour, frame_to_bgr

#: an input is called truncated when its last decoded frame ends this long before the container says it should
TRUNCATION_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class VideoInfo:
    """What the runtime needs to know about an input video (sizes as displayed, i.e. after rotation)."""

    width: int
    height: int
    fps: Fraction
    duration: float
    has_audio: bool
    time_base: Fraction
    rotation: int = 0
    colour: VideoColour = field(default_factory=VideoColour)

    @property
    def estimated_frames(self) -> int | None:
        """Frame count from duration × rate (for the progress bar; the exact count is whatever decodes)."""
        return round(self.duration * self.fps) if self.duration > 0 and self.fps > 0 else None


@dataclass
class DecodedFrame:
    """One upright H×W×3 uint8 BGR frame with its presentation timestamp and duration in the stream's time base."""

    image: np.ndarray
    pts: int
    duration: int | None


class VideoReader:
    """Decode a video file to BGR frames with their timestamps, all of them, in presentation order."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CliplitError(f"{self.path}: no such file")
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise CliplitError(f"{self.path}: not a readable video (corrupt, truncated or not a video)") from error
        if not self._container.streams.video:
            self._container.close()
            raise CliplitError(f"{self.path}: not a readable video (it has no video stream)")
        self._stream = stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: same frames, several cores
        self._errors = 0
        first = self._first_frame()
        rotation = _quarter_turns(first.rotation) * 90
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=Fraction(rate) if rate else Fraction(0),
            duration=self._expected_end() or 0.0,
            has_audio=bool(self._container.streams.audio),
            time_base=Fraction(stream.time_base),
            rotation=rotation,
            colour=VideoColour.of_frame(first),
        )
        #: frames handed out so far
        self.decoded = 0
        #: after iterating: what was wrong with the input (truncated, undecodable packets), or None
        self.damage: str | None = None

    def _first_frame(self) -> av.VideoFrame:
        """Decode the first frame now, so that an unreadable file fails before any work (and to learn its size)."""
        self._frames = self._decode_all()
        try:
            first = next(self._frames)
        except (StopIteration, av.FFmpegError) as error:
            self._container.close()
            raise CliplitError(f"{self.path}: not a readable video (no frame could be decoded)") from error
        self._pending: av.VideoFrame | None = first
        return first

    def _decode_all(self) -> Iterator[av.VideoFrame]:
        """Every frame the decoder can give; a packet it cannot read is counted and skipped, and an error of the
        demuxer (a file cut short) ends the stream."""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError:
                self._errors += 1
                return
            self._errors += packet.is_corrupt  # the demuxer saw damage (MPEG-TS continuity, checksums)
            try:
                yield from packet.decode()
            except av.FFmpegError:
                self._errors += 1

    def __iter__(self) -> Iterator[DecodedFrame]:
        previous: int | None = None
        step = round(1 / (self.info.fps * self.info.time_base)) if self.info.fps else 1
        last_end = None
        frames = self._frames
        if self._pending is not None:
            frames = _chain(self._pending, frames)
            self._pending = None
        for frame in frames:
            pts = frame.pts if frame.pts is not None else (previous + step if previous is not None else 0)
            if previous is not None and pts <= previous:  # a broken stream; an encoder needs increasing times
                pts = previous + 1
            previous = pts
            duration = frame.duration or None
            last_end = pts + (duration or step)
            self.decoded += 1
            yield DecodedFrame(self._upright(frame), pts, duration)
        self.damage = self._describe_damage(last_end)

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        image = frame_to_bgr(frame)
        turns = _quarter_turns(frame.rotation)
        return np.ascontiguousarray(np.rot90(image, turns)) if turns else image

    def _expected_end(self) -> float | None:
        """Where the container says the video stream ends, in seconds (None where it does not say)."""
        stream = self._stream
        start = stream.start_time or 0
        if stream.duration:
            return float((start + stream.duration) * stream.time_base)
        tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska writes one per stream
        if tag:
            try:
                hours, minutes, seconds = tag.split(":")
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
        return None

    def _describe_damage(self, last_end: int | None) -> str | None:
        problems = []
        if self._errors:
            problems.append(f"{plural(self._errors, 'damaged or undecodable packet')}")
        expected = self._expected_end()
        reached = float(last_end * self.info.time_base) if last_end is not None else 0.0
        if expected is not None and reached < expected - TRUNCATION_TOLERANCE_S:
            problems.append(f"it ends at {reached:.2f} s of the {expected:.2f} s its container announces")
        if not problems:
            return None
        total = self.info.estimated_frames
        of = f" of about {total}" if total and total > self.decoded else ""
        return (
            f"{self.path.name} is truncated or damaged ({'; '.join(problems)}): {self.decoded}{of} frames "
            "were recovered"
        )

    def close(self) -> None:
        self._container.close()


def _chain(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield first
    yield from rest


def _quarter_turns(rotation: float | None) -> int:
    """Counter-clockwise quarter turns for a display rotation in degrees (ffmpeg's sign: positive turns left)."""
    return round((rotation or 0) / 90) % 4
