"""Where enhanced frames go: image files, a video file, a preview window.

Every file is written under a temporary name and renamed into place only when complete
(:func:`cliplit.core.atomic.atomic_output`), so a failed or aborted run never leaves a truncated file under the
final name. A video that ends early (Ctrl-C, SIGTERM, a stream that went away, a truncated input) is finished
properly and kept: it is a complete, playable file holding the frames enhanced so far.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from cliplit.core.atomic import atomic_output, check_writable
from cliplit.core.errors import CliplitError
from cliplit.core.images import write_image
from cliplit.runtime.sources import Item
from cliplit.runtime.video_encoding import EncoderSettings, encoder_settings, precision_warning
from cliplit.runtime.video_write import VideoWriter


class ImageSink:
    """Writes item i to ``outputs[i]``; items that failed upstream are collected in :attr:`failures`."""

    def __init__(self, outputs: list[Path], *, overwrite: bool = False) -> None:
        self.outputs = outputs
        self.overwrite = overwrite
        self.failures: list[str] = []

    def write(self, item: Item) -> None:
        if item.error is not None:
            self.failures.append(item.error)
            return
        path = self.outputs[item.index]
        try:
            write_image(path, item.image, overwrite=self.overwrite)
        except OSError as error:  # a full disk, a read-only folder: every later image would fail the same way
            raise _write_error(path, error) from error


class VideoSink:
    """Encodes frames into one video file; use as a context manager around the whole run.

    The encoder starts with the first frame (its size decides the video's). Frames keep their timestamps (``pts`` in
    ``time_base``); frames without one (cameras, streams) are timed by their index at ``fps``. With ``audio_from``
    that file's audio streams are copied in, interleaved with the video. ``fill_gaps`` repeats the previous frame for
    frames a real-time run dropped, so the recording keeps the source's timing. The first item's ``colour`` (a video
    file's tags and bit depth) is the output's: the sink learns it with the frames because it is built before the
    source is read; what the output cannot keep of it (10-bit precision, HDR side data) is a warning on stderr.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: Fraction,
        *,
        settings: EncoderSettings | None = None,
        time_base: Fraction | None = None,
        audio_from: Path | None = None,
        overwrite: bool = False,
        fill_gaps: bool = False,
    ) -> None:
        self.path = check_writable(path, overwrite)
        self.fps = fps
        self.time_base = time_base
        self.settings = settings or encoder_settings(self.path)
        self.audio_from = audio_from
        self.overwrite = overwrite
        self.fill_gaps = fill_gaps
        self.frames = 0
        self._writer: VideoWriter | None = None
        self._last: Item | None = None
        self._stack = ExitStack()

    def __enter__(self) -> VideoSink:
        with ExitStack() as stack:
            try:
                self._target = stack.enter_context(atomic_output(self.path, overwrite=self.overwrite))
            except OSError as error:
                raise _write_error(self.path, error) from error
            self._stack = stack.pop_all()
        return self

    def write(self, item: Item) -> None:
        try:
            self._write(item)
        except CliplitError as error:
            raise self._failed(error) from error

    def _write(self, item: Item) -> None:
        image = item.image
        timed = item.pts is not None and self.time_base is not None
        if self._writer is None:
            height, width = image.shape[:2]
            self._writer = VideoWriter(
                self._target,
                width,
                height,
                time_base=self.time_base if timed else 1 / self.fps,
                rate=self.fps,
                settings=self.settings,
                audio_from=self.audio_from,
                colour=item.colour,
            )
            warning = precision_warning(item.colour, self.path, self.settings) if item.colour is not None else None
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
        if self.fill_gaps and self._last is not None:
            for gap in range(self._last.index + 1, item.index):
                self._writer.write(self._last.image, gap)
        self._writer.write(image, item.pts if timed else item.index, item.duration if timed else None)
        self._last = item
        self.frames = self._writer.frames

    def finish(self, *, stopped_early: bool = False) -> None:
        """Complete the file; the audio is cut to the video's length if the run ``stopped_early``."""
        if self._writer is None:
            raise CliplitError(f"no frames reached the encoder; {self.path} was not written")
        try:
            self._writer.close(audio_until=self._writer.end_time if stopped_early else None)
        except CliplitError as error:
            raise self._failed(error) from error

    def _failed(self, error: CliplitError) -> CliplitError:
        return CliplitError(f"cannot write {self.path}: {error}; nothing was written under that name")

    def __exit__(self, exc_type: object, exc: BaseException | None, traceback: object) -> None:
        if exc is not None and self._writer is not None:
            self._writer.abort()
        try:
            self._stack.__exit__(exc_type, exc, traceback)
        except OSError as error:  # the final rename
            raise _write_error(self.path, error) from error


def _write_error(path: Path, error: OSError) -> CliplitError:
    """A full disk or a folder without write permission, said plainly."""
    if isinstance(error, CliplitError):  # OutputExistsError is both
        return error
    return CliplitError(f"cannot write {path}: {error.strerror or error}; {path} was not written")


class PreviewWindow:
    """The ``--show`` window; :meth:`show` returns False once the user presses q or Esc or closes it."""

    def __init__(self, title: str = "cliplit enhance (q to stop)") -> None:
        self.title = title
        self._opened = False

    def show(self, frame: np.ndarray) -> bool:
        try:
            if self._opened and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                return False
            cv2.imshow(self.title, frame)
            self._opened = True
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as error:
            raise CliplitError(
                "--show needs OpenCV built with GUI support (opencv-python, not opencv-python-headless) and a "
                f"display ({error.err or error})"
            ) from error
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self._opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
