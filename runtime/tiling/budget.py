"""The memory policy: per frame size, one untiled call or tiles as large as the memory budget allows.

The untiled path's peak memory is estimated from the frame size (calibrated by measuring ONNX Runtime, see
``UNTILED_BYTES_PER_PIXEL``); a frame whose estimate exceeds the budget (``--max-memory``; by default what the process
holds plus half of the available memory, see :mod:`cliplit.runtime.memory`) is tiled.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.runtime.memory import default_budget, format_size, resident_memory, return_large_frees_to_the_system
from cliplit.runtime.tiling.passes import tiled_enhance, tiled_light_map
from cliplit.runtime.tiling.session import SplitModel

#: Peak memory of one untiled network call per frame pixel (ONNX Runtime on CPU, FP32, with its input and output
#: arrays): the peak RSS growth of one call in a fresh process, measured by ``python -m
#: cliplit.benchmarks.tiling_memory`` at 1640 B at 0.26 MP, 1635 B at 1 MP and 1137 B at 3.1 MP (the CPU arena grows
#: in powers of two, so some sizes waste more); 15.3 GB for 12 MP was reported in issue 12 (1240 B). The largest,
#: rounded up, so the estimate errs towards tiling.
UNTILED_BYTES_PER_PIXEL = 1700
#: Peak memory of the tiled path per pixel of its window (a tile grown by both halos): the tail's arena, kept between
#: tiles, plus a head call (its arena is given back after each call) and the features passed between them. Measured
#: the same way at 1767-1795 B (tiles of 512 to 1024 pixels, frames of 3 to 12 MP); 10 % more as a margin.
TILED_BYTES_PER_PIXEL = 2000
#: Whole-frame arrays of the tiled path per pixel: the input frame and the enhanced frame (uint8 BGR each); 4 more
#: when the whole light map is needed (``--scale``, temporal smoothing).
FRAME_BYTES_PER_PIXEL = 6
LIGHT_MAP_BYTES_PER_PIXEL = 4
#: Peak memory of one untiled call of a distilled student per frame pixel, with its input and output arrays: 61 B
#: measured at 3, 12 and 48 MP (ONNX Runtime, FP32, fresh process); rounded up. Its full-resolution work is a few
#: element-wise passes, so a 48 MP photo needs about 3 GiB and it has no split: it runs whole frames.
STUDENT_BYTES_PER_PIXEL = 70
#: Below this tile side the halos would cost more than the tile; a budget that cannot fit it is an error.
MIN_TILE = 64
#: Tiles are at most this many pixels on a side, whatever the budget: beyond it the halos' share (7 % of the work at
#: 1024×1024) shrinks by too little to be worth gigabytes, so a large default budget is not used up.
MAX_TILE = 1024


def fit_tile(height: int, width: int, room: int, halo: int) -> tuple[int, int]:
    """The largest tile (rows, columns) whose window (tile + ``halo`` on each side) fits ``room`` bytes of
    ``TILED_BYTES_PER_PIXEL``: square where the frame allows, as wide as the frame when it is short."""
    window_pixels = room // TILED_BYTES_PER_PIXEL
    side = math.isqrt(max(0, window_pixels)) - 2 * halo
    rows = min(height, side)
    cols = min(width, window_pixels // (rows + 2 * halo) - 2 * halo) if rows > 0 else 0
    rows = min(height, window_pixels // (cols + 2 * halo) - 2 * halo) if cols > 0 else rows
    return rows, cols


class Tiling:
    """Decides, per frame size, between one untiled network call and tiled inference under a memory budget, and runs
    the tiled path. ``budget``: bytes the process may hold (default: :func:`default_budget`); ``tile``: force tiles of
    this (rows, columns) on every frame (tests, experiments). ``load`` gives the split model on first need."""

    def __init__(
        self,
        load: Callable[[], SplitModel] | None,
        budget: int | None = None,
        *,
        tile: tuple[int, int] | None = None,
        untiled_bytes_per_pixel: int = UNTILED_BYTES_PER_PIXEL,
    ) -> None:
        self.explicit = budget is not None
        self.untiled_bytes_per_pixel = untiled_bytes_per_pixel
        self.budget = budget if budget is not None else default_budget()
        self.tile = tile
        self._load = load
        self._split: SplitModel | None = None
        self._unavailable = False
        self._plans: dict[tuple[int, int, int, bool], tuple[int, int] | None] = {}

    def describe(self) -> str:
        if self._load is None:
            return f"whole frames within a memory budget of {format_size(self.budget)}"
        return f"tiled above a memory budget of {format_size(self.budget)}"

    def plan(self, height: int, width: int, batch: int = 1, *, light_map: bool = False) -> tuple[int, int] | None:
        """The tile size for ``batch`` frames of ``height`` × ``width``, or None to run them untiled. Decided once
        per size, so a video's frames all take the same path. ``light_map``: the whole light map will be kept."""
        key = (height, width, batch, light_map)
        if key not in self._plans:
            self._plans[key] = self._plan(height, width, batch, light_map)
            if self._plans[key] is not None:  # the budget holds only if freed tensors leave the process
                return_large_frees_to_the_system()
        return self._plans[key]

    def _plan(self, height: int, width: int, batch: int, light_map: bool) -> tuple[int, int] | None:
        if self.tile is not None:
            return self.tile
        held = resident_memory()
        untiled = self.untiled_bytes_per_pixel * height * width * batch
        if held + untiled <= self.budget:
            return None
        if self._load is None:
            return self._whole_frames(height, width, held + untiled)
        split = self._available_split()
        if split is None:
            return None
        frames = (FRAME_BYTES_PER_PIXEL + (LIGHT_MAP_BYTES_PER_PIXEL if light_map else 0)) * height * width * batch
        halo = split.head_halo + split.tail_halo
        room = min(self.budget - held - frames, TILED_BYTES_PER_PIXEL * (MAX_TILE + 2 * halo) ** 2)
        tile = fit_tile(height, width, room, halo)
        if tile[0] < min(MIN_TILE, height) or tile[1] < min(MIN_TILE, width):
            smallest = TILED_BYTES_PER_PIXEL * (MIN_TILE + 2 * halo) ** 2
            raise CliplitError(
                f"a memory budget of {format_size(self.budget)} (--max-memory) is too small for {width}x{height} "
                f"frames: this process holds {format_size(held)}, the frames and their output take "
                f"{format_size(frames)} and even {MIN_TILE}x{MIN_TILE} tiles need {format_size(smallest)} more"
            )
        print(
            f"{width}x{height} frames would need about {format_size(held + untiled)} untiled, more than the memory "
            f"budget of {format_size(self.budget)}: running them in tiles of up to {tile[1]}x{tile[0]} (same result)",
            file=sys.stderr,
        )
        return tile

    def _whole_frames(self, height: int, width: int, needed: int) -> None:
        """A model without a split (a student) over the budget: an explicit budget is an error, the default one a
        warning (the frame may well fit: the default leaves half of the free memory to the rest of the machine)."""
        message = (
            f"{width}x{height} frames need about {format_size(needed)} with this model, more than the memory budget of "
            f"{format_size(self.budget)}; a distilled student runs whole frames (it has no split for tiling)"
        )
        if self.explicit:
            raise CliplitError(f"{message}: raise --max-memory or make the frames smaller")
        print(f"warning: {message}; running them whole", file=sys.stderr)

    @property
    def split(self) -> SplitModel:
        """The split model, loaded (and exported, on first use) now if need be."""
        if self._split is None:
            if self._load is None:
                raise CliplitError("this model has no split for tiled inference (a student runs whole frames)")
            self._split = self._load()
        return self._split

    def _available_split(self) -> SplitModel | None:
        """The split model, or None when it cannot be had and no budget was asked for explicitly: then the frame
        runs untiled (as before tiling existed) after a warning, rather than failing a run that may well fit."""
        if self._split is None and not self._unavailable:
            try:
                return self.split
            except CliplitError as error:
                if self.explicit:
                    raise
                self._unavailable = True
                print(f"warning: {error}; running untiled, which may exceed the memory budget", file=sys.stderr)
        return self._split

    def enhance(
        self, frame: np.ndarray, tile: tuple[int, int], on_tile: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """A uint8 BGR frame enhanced in tiles of at most ``tile``; ``on_tile(done, total)``: its progress (see
        :func:`tile_light_maps`)."""
        return tiled_enhance(self.split, frame, tile, on_tile=on_tile)

    def light_map(
        self, frame: np.ndarray, tile: tuple[int, int], on_tile: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """The H×W float32 light map of a uint8 BGR frame, computed in tiles of at most ``tile``; ``on_tile(done,
        total)``: its progress (see :func:`tile_light_maps`)."""
        return tiled_light_map(self.split, frame, tile, on_tile=on_tile)
