"""The two passes of tiled inference (pooling, then light map per tile) and what they make: a frame's light map or
its enhanced pixels."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from cliplit.core.contract import check_frame_size, model_input_from_bgr
from cliplit.core.light_map import apply_light_map_bgr8
from cliplit.runtime.tiling.geometry import Region, plan_tiles, window_shape
from cliplit.runtime.tiling.pooling import PyramidSums
from cliplit.runtime.tiling.session import SplitModel


def _window_input(frame: np.ndarray, window: Region) -> np.ndarray:
    return model_input_from_bgr("float", frame[None, window.top : window.bottom, window.left : window.right])


def pooled_means(split: SplitModel, frame: np.ndarray, tile: tuple[int, int]) -> dict[int, np.ndarray]:
    """The pooling pass: the frame's pooled PPM input, computed with the head on tiles of at most ``tile``."""
    height, width = frame.shape[:2]
    sums: PyramidSums | None = None
    tiles = plan_tiles(height, width, tile)
    rows, cols = window_shape(tiles, split.head_halo)
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
    rows, cols = window_shape(tiles, split.tail_halo)
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
