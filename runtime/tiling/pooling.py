"""The pooling pass's exact sums: every pyramid level's bin sums over a whole frame, accumulated tile by tile."""

from __future__ import annotations

import numpy as np

from cliplit.core.contract import PPM_BINS
from cliplit.core.split_contract import bin_bounds
from cliplit.runtime.tiling.geometry import Region


class PyramidSums:
    """Per-bin sums of the features over a whole frame, accumulated tile by tile, for every pyramid level at once.

    Along each axis the edges of all levels' bins cut the frame into segments; every bin is a run of whole segments.
    A tile adds its features' per-segment sums (float64), so the result does not depend on how the frame was tiled.
    """

    def __init__(self, channels: int, height: int, width: int, levels: tuple[int, ...] = PPM_BINS) -> None:
        self.levels = levels
        self.row_bins = {bins: bin_bounds(height, bins) for bins in levels}
        self.col_bins = {bins: bin_bounds(width, bins) for bins in levels}
        self.row_edges = _segment_edges(self.row_bins)
        self.col_edges = _segment_edges(self.col_bins)
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
            for i, (top, bottom) in enumerate(self.row_bins[bins]):
                rows = slice(*np.searchsorted(self.row_edges, (top, bottom)))
                band = self.sums[:, rows].sum(axis=1)
                for j, (left, right) in enumerate(self.col_bins[bins]):
                    cols = slice(*np.searchsorted(self.col_edges, (left, right)))
                    level[:, i, j] = band[:, cols].sum(axis=1) / ((bottom - top) * (right - left))
            pooled[bins] = level[None].astype(np.float32)
        return pooled


def _segment_edges(levels: dict[int, list[tuple[int, int]]]) -> np.ndarray:
    """Every bin edge of every level along one axis, sorted once: the boundaries of the segments."""
    return np.unique([edge for bounds in levels.values() for bin_ in bounds for edge in bin_])


def _segments_in(edges: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The segments that [start, stop) overlaps (their indices) and where each piece begins, relative to start."""
    first = int(np.searchsorted(edges, start, side="right")) - 1
    inner = edges[(edges > start) & (edges < stop)]
    return np.arange(first, first + len(inner) + 1), np.concatenate(([0], inner - start))
