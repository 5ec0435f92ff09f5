"""Where frames come from: image files, a video file, a camera or a network stream.

Every source yields :class:`Item` objects (a numbered frame, or the error that kept an image from being read) and
says whether it is live (a camera or stream, whose frames go stale if not taken at once) and, where known, how many
frames and what frame rate to expect. Cameras and rtsp/http/... streams go through ``cv2.VideoCapture``; when one
stops delivering frames the source reopens it a few times with growing pauses before giving up, and then ends
cleanly with a message in :attr:`CaptureSource.ended_by` rather than raising, so the output written so far is kept.
"""

from __future__ import annotations

import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.core.images import Photo, read_image
from cliplit.runtime.video_colour import VideoColour
from cliplit.runtime.video_read import VideoReader

STREAM_URL = re.compile(r"^(rtsps?|rtmps?|https?|udp|tcp|srt)://", re.IGNORECASE)
#: how long OpenCV may wait to open a stream or for its next frame before reporting a failure
STREAM_TIMEOUT_MS = 10_000


@dataclass
class Item:
    """One unit of work: frame ``index`` of the source, or the reason it could not be read."""

    index: int
    #: a frame, or on the image path a :class:`Photo` (pixels with their alpha, colour profile and EXIF)
    image: np.ndarray | Photo | None
    name: str = ""
    error: str | None = None
    #: presentation time and duration in the source's :attr:`FrameSource.time_base` (video files); None: by index
    pts: int | None = None
    duration: int | None = None
    #: how the source's pixel values are to be shown (video files): a video sink tags its output the same way
    colour: VideoColour | None = None


class FrameSource(ABC):
    """Base of all sources: iterate :meth:`items`, then :meth:`close`."""

    live = False
    #: expected number of items, for the progress bar (None: unknown, e.g. a camera)
    total: int | None = None
    fps: Fraction | None = None
    #: unit of the items' ``pts`` (None: items are timed by their index at ``fps``)
    time_base: Fraction | None = None
    description = ""
    #: set once :meth:`items` has ended: why the source ended before its end (a dropped stream, a truncated file)
    ended_by: str | None = None

    @abstractmethod
    def items(self) -> Iterator[Item]:
        """The source's items in order; a live source's iterator ends when it disconnects for good."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device, file or process behind the source."""


def is_stream_url(text: str) -> bool:
    return bool(STREAM_URL.match(text))


#: files a folder of images may hold that are moving pictures: never skipped silently, refused with a message
MOTION_SUFFIXES = frozenset({".gif", ".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm"})


class ImageSource(FrameSource):
    """Still images in the given order; one that cannot be read becomes an error item, the others go on. A GIF or a
    video among them (found in a folder) becomes an error item that says to enhance it on its own."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.total = len(self.paths)
        self.description = f"{len(self.paths)} image{'s' if len(self.paths) != 1 else ''}"

    def items(self) -> Iterator[Item]:
        for index, path in enumerate(self.paths):
            if path.suffix.lower() in MOTION_SUFFIXES:
                error = (
                    f"{path}: a GIF or video is enhanced as a video, on its own: cliplit enhance {path.name} "
                    f"-o {path.stem}-enhanced.mp4"
                )
                yield Item(index, None, name=str(path), error=error)
                continue
            try:
                yield Item(index, read_image(path), name=str(path))
            except CliplitError as error:
                yield Item(index, None, name=str(path), error=str(error))


class VideoFileSource(FrameSource):
    """Every frame of a video file, in order, with its timestamp (see :mod:`cliplit.runtime.video_read`); a truncated or
    damaged file ends with :attr:`ended_by` saying how many frames were recovered."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.reader = VideoReader(self.path)
        self.info = self.reader.info
        self.fps = self.info.fps
        self.time_base = self.info.time_base
        self.total = self.info.estimated_frames
        self.description = f"{self.path.name} ({self.info.width}x{self.info.height}, {float(self.fps):.3g} fps)"

    def items(self) -> Iterator[Item]:
        colour = self.info.colour
        for index, frame in enumerate(self.reader):
            yield Item(index, frame.image, pts=frame.pts, duration=frame.duration, colour=colour)
        self.ended_by = self.reader.damage

    def close(self) -> None:
        self.reader.close()


def open_capture(spec: int | str) -> cv2.VideoCapture:
    """Open a camera index or stream URL with OpenCV, with timeouts so a dead stream cannot hang the run."""
    if isinstance(spec, int):
        return cv2.VideoCapture(spec)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
    return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)


class CaptureSource(FrameSource):
    """A camera (``--camera N``) or a network stream, read with ``cv2.VideoCapture``.

    When reading fails, a live stream is reopened up to ``reconnect`` times, waiting ``retry_delay`` seconds and then
    twice as long each time. A stream that announces a frame count (a file served over http) has simply ended when
    it has delivered that many frames; reopening it would start it over, so it is never reconnected.
    """

    live = True

    def __init__(
        self,
        spec: int | str,
        *,
        reconnect: int = 3,
        retry_delay: float = 1.0,
        open_capture: Callable[[int | str], cv2.VideoCapture] = open_capture,
    ) -> None:
        self.spec = spec
        self.reconnect = reconnect
        self.retry_delay = retry_delay
        self._open = open_capture
        self.description = f"camera {spec}" if isinstance(spec, int) else f"stream {_redact(spec)}"
        self.capture = self._open(spec)
        if not self.capture.isOpened():
            self.capture.release()
            why = "no such device, or it is in use" if isinstance(spec, int) else "unreachable or not a video stream"
            raise CliplitError(f"cannot open {self.description}: {why}")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = Fraction(fps).limit_denominator(1001) if 0 < fps < 1000 else None
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.finite_count = count if count > 0 and not isinstance(spec, int) else None

    def items(self) -> Iterator[Item]:
        index = 0
        attempts = 0
        while True:
            ok, frame = self.capture.read()
            if ok and frame is not None:
                attempts = 0
                yield Item(index, frame)
                index += 1
                continue
            if self.finite_count is not None:
                if index < self.finite_count:
                    self.ended_by = f"{self.description} broke off after {index} of {self.finite_count} frames"
                return
            if attempts >= self.reconnect:
                self.ended_by = (
                    f"{self.description} stopped delivering frames after {index} frames and did not come back "
                    f"after {self.reconnect} reconnection attempt{'s' if self.reconnect != 1 else ''}"
                )
                return
            time.sleep(self.retry_delay * 2**attempts)
            attempts += 1
            self.capture.release()
            self.capture = self._open(self.spec)

    def close(self) -> None:
        self.capture.release()


def _redact(url: str) -> str:
    """A stream URL without its password, for messages."""
    return re.sub(r"//([^/@:]+):[^/@]*@", r"//\1:***@", url)
