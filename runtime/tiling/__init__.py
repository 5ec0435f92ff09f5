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

One module per concern: ``geometry`` (tiles and halo windows), ``pooling`` (the exact bin sums), ``session`` (the
split graphs in ONNX Runtime), ``passes`` (running the two passes), ``budget`` (the memory policy, :class:`Tiling`)
and ``loading`` (which tiling a model gets, :func:`open_tiling`).
"""

from cliplit.runtime.tiling.budget import MAX_TILE, MIN_TILE, TILED_BYTES_PER_PIXEL, Tiling, fit_tile
from cliplit.runtime.tiling.geometry import Region, plan_tiles
from cliplit.runtime.tiling.loading import open_tiling
from cliplit.runtime.tiling.passes import tile_light_maps, tiled_enhance, tiled_light_map
from cliplit.runtime.tiling.pooling import PyramidSums
from cliplit.runtime.tiling.session import SplitModel

__all__ = [
    "MAX_TILE",
    "MIN_TILE",
    "TILED_BYTES_PER_PIXEL",
    "PyramidSums",
    "Region",
    "SplitModel",
    "Tiling",
    "fit_tile",
    "open_tiling",
    "plan_tiles",
    "tile_light_maps",
    "tiled_enhance",
    "tiled_light_map",
]
