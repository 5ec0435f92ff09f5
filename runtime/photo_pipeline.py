"""The image mode's pipeline stages: whole photos in (depth, alpha, colour profile and EXIF travel with the pixels),
16-bit enhancement where the model allows, and writing each photo with what its format holds, saying what it drops.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.core.images import Photo, photo_losses, read_photo
from cliplit.runtime.enhance_plan import is_motion
from cliplit.runtime.sinks import ImageSink
from cliplit.runtime.sources import ImageSource, Item

if TYPE_CHECKING:
    from cliplit.runtime.enhancer import Enhancer


class Notes:
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


class PhotoSource(ImageSource):
    """The images as whole :class:`Photo` items (``read_photo``): depth, alpha, colour profile and EXIF travel with
    the pixels through the pipeline to :class:`PhotoSink`."""

    def items(self) -> Iterator[Item]:
        for index, path in enumerate(self.paths):
            if is_motion(path):  # ImageSource's item says how to enhance it instead
                yield replace(next(ImageSource([path]).items()), index=index)
                continue
            try:
                yield Item(index, read_photo(path), name=str(path))
            except CliplitError as error:
                yield Item(index, None, name=str(path), error=str(error))


class PhotoEnhancer:
    """The enhancer as the image pipeline calls it (a ``tolerate_errors`` pipeline calls ``enhance`` on each item,
    and sets ``on_tile`` for its progress bar): takes and gives a whole :class:`Photo`, and enhances a 16-bit photo
    at 16 bits where the model allows, saying once why not where it does not."""

    def __init__(self, enhancer: Enhancer, notes: Notes) -> None:
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


class PhotoSink(ImageSink):
    """Writes each photo with what its format holds of it (``write_image``), then says what the format dropped."""

    def __init__(self, outputs: list[Path], notes: Notes, *, overwrite: bool = False) -> None:
        super().__init__(outputs, overwrite=overwrite)
        self.notes = notes

    def write(self, item: Item) -> None:
        super().write(item)
        if item.error is None:
            path = self.outputs[item.index]
            for loss in photo_losses(item.image, path):
                self.notes.say(loss, path)
