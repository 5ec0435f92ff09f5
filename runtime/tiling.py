"""Exact tiled inference: frames of any size in bounded memory, with the same result as one full-frame call.

The network is convolutional except its pyramid pooling (PPM), which averages the features over the whole frame in
1×1, 2×2, 3×3 and 6×6 bins, so cutting the frame into tiles naively changes the output. It is run as two ONNX graphs
split at the PPM (:mod:`cliplit.core.split_contract`, built by :mod:`cliplit.runtime.models`):

1. **pooling pass** — the head (image → features) runs tile by tile; each tile's window carries a halo of real
   neighbour pixels as wide as the head's receptive radius, so once the halo is cropped the tile's features equal
   the full frame's (the convolutions' reflect padding then only ever acts at the real frame borders, where a tile's
   window ends). Their sums over every pooling bin of the whole frame are accumulated exactly: the bins of all levels
   cut each axis into at most a few dozen segments (bins overlap when a side is not divisible by the bin count, as in
   PyTorch's adaptive pooling), a tile's features are summed per segment in float64 and each bin's mean is the sum of
   its segments divided by its pixel count.
2. **light-map pass** — for each tile, the head runs again on a window grown by both halos and the tail (features +
   the frame's pooled means + the window's position in the frame → light map) on the features grown by the tail's
   halo; the tail upsamples the pooled levels for exactly the rows and columns it covers. The tile's centre of the
   light map is exact, and is applied to the tile's pixels at once (``apply_light_map_bgr8``), so neither the
   frame's features nor its full-resolution float image ever exist.

Running the head twice and the halos cost 1.3-1.5× the CPU time of one untiled call (the head is a sixth of the
network's operations but a fifth of its time); keeping the features instead would cost 128 bytes per pixel.

The split graphs have several inputs and outputs that are not the normal I/O contract, so they run in a small
dedicated ONNX Runtime runner (:class:`SplitModel`) rather than through ``Backend``: a ``Backend`` runs one contract
input to contract outputs, and widening that protocol for every backend would buy nothing here, since ONNX Runtime is
part of the base install. Whatever backend runs the untiled frames, tiled frames use ONNX Runtime on the CUDA or CPU
provider (TensorRT's provider would build an engine for every new tile shape).

:class:`Tiling` decides per frame: the untiled path's peak memory is estimated from the frame size (calibrated by
measuring ONNX Runtime, see ``UNTILED_BYTES_PER_PIXEL``), and a frame whose estimate exceeds the budget
(``--max-memory``; by default what the process holds plus half of the available memory, see
:mod:`cliplit.runtime.memory`) is tiled, with tiles as large as the budget allows.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cliplit.core.contract import META_WEIGHTS_SHA256, PPM_BINS, check_frame_size, model_input_from_bgr
from cliplit.core.errors import CliplitError
from cliplit.core.light_map import apply_light_map_bgr8
from cliplit.core.split_contract import (
    FEATURES,
    HEAD_INPUT,
    LIGHT_MAP,
    META_HALO,
    META_SPLIT_PART,
    ORIGIN,
    TAIL_INPUTS,
    pooled_name,
)
from cliplit.core.weights import DEFAULT_WEIGHTS
from cliplit.runtime.backends.base import BackendOptions
from cliplit.runtime.backends.onnxruntime import (
    OnnxRuntimeOptions,
    default_providers,
    open_session,
    session_options,
)
from cliplit.runtime.memory import default_budget, format_size, resident_memory, return_large_frees_to_the_system


@dataclass(frozen=True)
class Region:
    """Rows [top, bottom) and columns [left, right) of a frame."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def window(self, rows: int, cols: int, height: int, width: int) -> Region:
        """The ``rows`` × ``cols`` region (or less where the ``height`` × ``width`` frame is smaller) that contains
        this one, centred on it as far as the frame allows.

        Windows grown by a halo are made this way, all of one size, instead of clipping the halo at the frame: a
        tile at the border simply gets more real neighbours on its inner side. With every call the same shape, ONNX
        Runtime's memory arena, sized by the first call, never has to grow: a window a few pixels larger than the
        first made it extend by a power of two (+1.1 GB measured on a 12 MP photo).
        """
        top, bottom = _span(self.top, self.bottom, rows, height)
        left, right = _span(self.left, self.right, cols, width)
        return Region(top, left, bottom, right)

    def within(self, outer: Region) -> tuple[slice, slice]:
        """The slices of this region inside ``outer`` (which contains it)."""
        return (
            slice(self.top - outer.top, self.bottom - outer.top),
            slice(self.left - outer.left, self.right - outer.left),
        )


def _span(start: int, stop: int, length: int, size: int) -> tuple[int, int]:
    """[start, stop) widened to ``length`` (at most ``size``), centred where it fits inside [0, size)."""
    length = min(length, size)
    first = min(max(start - (length - (stop - start)) // 2, 0), size - length)
    return first, first + length


def plan_tiles(height: int, width: int, tile: tuple[int, int]) -> list[Region]:
    """Cover a ``height`` × ``width`` frame with tiles of at most ``tile`` = (rows, columns), as even as possible (the
    fewest tiles per axis, their sizes differing by at most one pixel), in row-major order."""
    rows = _split_axis(height, math.ceil(height / max(1, tile[0])))
    cols = _split_axis(width, math.ceil(width / max(1, tile[1])))
    return [Region(top, left, bottom, right) for top, bottom in rows for left, right in cols]


def _split_axis(size: int, parts: int) -> list[tuple[int, int]]:
    return [(size * i // parts, size * (i + 1) // parts) for i in range(parts)]


def bin_bounds(size: int, bins: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling bins along one axis: bin i is [floor(i·size/bins), ceil((i+1)·size/bins))."""
    return [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]


class PyramidSums:
    """Per-bin sums of the features over a whole frame, accumulated tile by tile, for every pyramid level at once.

    Along each axis the edges of all levels' bins cut the frame into segments; every bin is a run of whole segments.
    A tile adds its features' per-segment sums (float64), so the result does not depend on how the frame was tiled.
    """

    def __init__(self, channels: int, height: int, width: int, levels: tuple[int, ...] = PPM_BINS) -> None:
        self.height, self.width, self.levels = height, width, levels
        self.row_edges = _segment_edges(height, levels)
        self.col_edges = _segment_edges(width, levels)
        self.sums = np.zeros((channels, len(self.row_edges) - 1, len(self.col_edges) - 1), dtype=np.float64)

    def add(self, features: np.ndarray, tile: Region) -> None:
        """Add a C × tile.height × tile.width block of the frame's features at ``tile``."""
        rows, row_starts = _segments_in(self.row_edges, tile.top, tile.bottom)
        cols, col_starts = _segments_in(self.col_edges, tile.left, tile.right)
        partial = np.add.reduceat(features, row_starts, axis=1, dtype=np.float64)
        self.sums[:, rows[:, None], cols[None, :]] += np.add.reduceat(partial, col_starts, axis=2)

    def means(self) -> dict[int, np.ndarray]:
        """The pooled means of every level, 1 × C × b × b float32, as adaptive average pooling gives them."""
        pooled = {}
        for bins in self.levels:
            level = np.empty((self.sums.shape[0], bins, bins), dtype=np.float64)
            for i, (top, bottom) in enumerate(bin_bounds(self.height, bins)):
                rows = slice(*np.searchsorted(self.row_edges, (top, bottom)))
                band = self.sums[:, rows].sum(axis=1)
                for j, (left, right) in enumerate(bin_bounds(self.width, bins)):
                    cols = slice(*np.searchsorted(self.col_edges, (left, right)))
                    level[:, i, j] = band[:, cols].sum(axis=1) / ((bottom - top) * (right - left))
            pooled[bins] = level[None].astype(np.float32)
        return pooled


def _segment_edges(size: int, levels: tuple[int, ...]) -> np.ndarray:
    return np.unique([edge for bins in levels for bounds in bin_bounds(size, bins) for edge in bounds])


def _segments_in(edges: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The segments that [start, stop) overlaps (their indices) and where each piece begins, relative to start."""
    first = int(np.searchsorted(edges, start, side="right")) - 1
    inner = edges[(edges > start) & (edges < stop)]
    return np.arange(first, first + len(inner) + 1), np.concatenate(([0], inner - start))


class SplitModel:
    """The head and tail graphs of one model in ONNX Runtime sessions (see the module docstring for why not a
    ``Backend``)."""

    def __init__(
        self,
        head_path: str | os.PathLike[str],
        tail_path: str | os.PathLike[str],
        options: OnnxRuntimeOptions | None = None,
    ) -> None:
        options = options or OnnxRuntimeOptions()
        settings = session_options(options)
        # ONNX Runtime's memory patterns are planned and kept per input shape: with the few tile shapes of a frame
        # they doubled the peak (measured) and saved no time.
        settings.enable_mem_pattern = False
        providers = list(options.providers) if options.providers else _split_providers(options.device)
        # The head's arena is given back after each call so it never sits beside the tail's (which is kept: giving
        # it back cost 7 % more time in page faults, for the head nothing measurable).
        self._head_run = ort.RunOptions()
        self._head_run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.head = open_session(Path(head_path), settings, providers)
        self.tail = open_session(Path(tail_path), settings, providers)
        head_meta = self.head.get_modelmeta().custom_metadata_map
        tail_meta = self.tail.get_modelmeta().custom_metadata_map
        for path, meta, part in ((head_path, head_meta, "head"), (tail_path, tail_meta, "tail")):
            if meta.get(META_SPLIT_PART) != part or not meta.get(META_HALO, "").isdigit():
                raise CliplitError(f"{path} is not the {part} of a cliplit split model")
        if head_meta.get(META_WEIGHTS_SHA256) != tail_meta.get(META_WEIGHTS_SHA256):
            raise CliplitError(f"{head_path} and {tail_path} were exported from different weights")
        inputs = tuple(i.name for i in self.tail.get_inputs())
        if inputs != TAIL_INPUTS:
            raise CliplitError(f"{tail_path} has inputs {inputs}, expected {TAIL_INPUTS}")
        self.weights_sha256 = head_meta.get(META_WEIGHTS_SHA256, "")
        self.head_halo = int(head_meta[META_HALO])
        self.tail_halo = int(tail_meta[META_HALO])

    @property
    def providers(self) -> list[str]:
        return list(self.head.get_providers())

    def features(self, image: np.ndarray) -> np.ndarray:
        """The head: N×3×h×w float RGB → N×C×h×w features."""
        return self.head.run([FEATURES], {HEAD_INPUT: image}, self._head_run)[0]

    def light_map(self, features: np.ndarray, pooled: dict[int, np.ndarray], origin: np.ndarray) -> np.ndarray:
        """The tail: a window's features, the frame's pooled means and the window's origin → N×1×h×w light map."""
        feed = {FEATURES: np.ascontiguousarray(features), ORIGIN: origin}
        feed |= {pooled_name(bins): means for bins, means in pooled.items()}
        return self.tail.run([LIGHT_MAP], feed)[0]


def _split_providers(device: int) -> list[str | tuple[str, dict[str, str]]]:
    return [p for p in default_providers(device) if (p if isinstance(p, str) else p[0]) != "TensorrtExecutionProvider"]


def _window_input(frame: np.ndarray, window: Region) -> np.ndarray:
    return model_input_from_bgr("float", frame[None, window.top : window.bottom, window.left : window.right])


def pooled_means(split: SplitModel, frame: np.ndarray, tile: tuple[int, int]) -> dict[int, np.ndarray]:
    """The pooling pass: the frame's pooled PPM input, computed with the head on tiles of at most ``tile``."""
    height, width = frame.shape[:2]
    sums: PyramidSums | None = None
    tiles = plan_tiles(height, width, tile)
    rows, cols = _window_shape(tiles, split.head_halo)
    for region in tiles:
        window = region.window(rows, cols, height, width)
        features = split.features(_window_input(frame, window))[0]
        if sums is None:
            sums = PyramidSums(features.shape[0], height, width)
        sums.add(features[(slice(None), *region.within(window))], region)
    assert sums is not None  # a checked frame has at least one tile
    return sums.means()


def tile_light_maps(
    split: SplitModel,
    frame: np.ndarray,
    tile: tuple[int, int],
    pooling_tile: tuple[int, int] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[Region, np.ndarray]]:
    """The light map of a uint8 BGR H×W×3 frame, tile by tile: (region, its light map h×w float32) pairs that cover
    the frame. ``tile``: the largest tile of the light-map pass; ``pooling_tile``: of the pooling pass (the head alone
    needs less memory per pixel, so it can take larger tiles); default ``tile``.

    ``on_tile(done, total)`` hears of the light-map pass's progress: ``(0, total)`` before the pooling pass, then
    ``(i, total)`` as tile i's light map is ready, in order. A large photo in tiles takes minutes where a progress
    bar counting whole frames would not move; with this it can say how far the frame has got. The pooling pass (the
    head alone, about a fifth of the time) comes before the first tile."""
    height, width = frame.shape[:2]
    check_frame_size(height, width)
    tiles = plan_tiles(height, width, tile)
    if on_tile is not None:
        on_tile(0, len(tiles))
    pooled = pooled_means(split, frame, pooling_tile or tile)
    rows, cols = _window_shape(tiles, split.tail_halo)
    halo = split.head_halo
    for done, region in enumerate(tiles, start=1):
        tail_window = region.window(rows, cols, height, width)
        head_window = tail_window.window(rows + 2 * halo, cols + 2 * halo, height, width)
        features = split.features(_window_input(frame, head_window))
        features = features[(slice(None), slice(None), *tail_window.within(head_window))]
        origin = np.array([tail_window.top, tail_window.left, height, width], dtype=np.int64)
        light_map = split.light_map(features, pooled, origin)[0, 0]
        if on_tile is not None:
            on_tile(done, len(tiles))
        yield region, light_map[region.within(tail_window)]


def _window_shape(tiles: list[Region], halo: int) -> tuple[int, int]:
    """The one window shape of a pass: the largest tile with ``halo`` on each side."""
    return max(r.height for r in tiles) + 2 * halo, max(r.width for r in tiles) + 2 * halo


def tiled_light_map(
    split: SplitModel,
    frame: np.ndarray,
    tile: tuple[int, int],
    pooling_tile: tuple[int, int] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The whole H×W float32 light map of ``frame`` by tiled inference (for ``--scale`` and temporal smoothing);
    ``on_tile``: progress, as :func:`tile_light_maps` reports it."""
    light_map = np.empty(frame.shape[:2], dtype=np.float32)
    for region, part in tile_light_maps(split, frame, tile, pooling_tile, on_tile):
        light_map[region.slices] = part
    return light_map


def tiled_enhance(
    split: SplitModel,
    frame: np.ndarray,
    tile: tuple[int, int],
    pooling_tile: tuple[int, int] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The enhanced uint8 BGR frame by tiled inference, each tile's light map applied as soon as it is computed;
    ``on_tile``: progress, as :func:`tile_light_maps` reports it."""
    enhanced = np.empty_like(frame)
    for region, light_map in tile_light_maps(split, frame, tile, pooling_tile, on_tile):
        enhanced[region.slices] = apply_light_map_bgr8(frame[region.slices], light_map)
    return enhanced


# ---------------------------------------------------------------------------------------------------------------------
# Memory: the budget, the untiled estimate and the tile size that fits.

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


#: the options of another backend that its tiles' ONNX Runtime sessions take over
TILE_OPTIONS: tuple[str, ...] = ("threads", "device")


def open_tiling(
    model: str | os.PathLike[str] | None,
    backend: str | BackendOptions = "auto",
    max_memory: int | None = None,
    *,
    tile: tuple[int, int] | None = None,
) -> Tiling | None:
    """The :class:`Tiling` of ``model`` as ``Enhancer.open`` gets it, or None where the memory budget does not apply:
    TensorRT engines (their optimisation profile bounds the frame size), models served by a Triton server (the
    memory is the server's) and the torch backend with a padding override (the split model has the checkpoint's own
    padding). A distilled student runs whole frames (``STUDENT_BYTES_PER_PIXEL``; it has no split), checked against
    the budget all the same."""
    from cliplit.runtime.backends import is_student, model_kind
    from cliplit.runtime.backends.torch import TorchOptions
    from cliplit.runtime.models import ensure_split

    model = DEFAULT_WEIGHTS if model is None else model
    options = backend if isinstance(backend, BackendOptions) else None
    kind = model_kind(model)
    if kind in ("engine", "server") or (isinstance(options, TorchOptions) and options.padding is not None):
        return None
    if is_student(model):
        return Tiling(None, max_memory, tile=tile, untiled_bytes_per_pixel=STUDENT_BYTES_PER_PIXEL)
    if options is None or isinstance(options, OnnxRuntimeOptions):
        ort_options = options or OnnxRuntimeOptions()
    else:  # another backend's threads and device carry over to the tiles' sessions (which run FP32 on the CPU/CUDA)
        carried = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name in TILE_OPTIONS}
        ort_options = OnnxRuntimeOptions(**carried)

    def load() -> SplitModel:
        head, tail = ensure_split(model)
        return SplitModel(head, tail, ort_options)

    return Tiling(load, max_memory, tile=tile)
