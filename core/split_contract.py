"""The I/O contract of the split models that tiled inference runs (beside, not instead of, the normal contract).

The network is convolutional except its pyramid pooling (PPM), which averages over the whole frame. Tiled inference
therefore runs it as two graphs, exported together from the same weights:

* the **head**: ``image`` (the ``float`` contract's input, N×3×h×w RGB in [0, 1]) → ``features`` (N×C×h×w, the
  PPM's input);
* the **tail**: ``features`` of a tile, the frame's pooled features ``pooled_<b>`` (N×C×b×b, the means over the whole
  frame's bins, one input per pyramid level of ``PPM_BINS``) and ``origin`` (int64 [top, left, frame height, frame
  width]: where the tile sits in the frame) → ``light_map`` (N×1×h×w).

Each graph's metadata says which part it is and its halo: how many pixels of real neighbours a tile needs on each
side for its centre to equal full-frame inference (the receptive radius of its padded convolutions). Torch-free: the
exporter writes this and the runtime reads it.
"""

from __future__ import annotations

from cliplit.core.contract import (
    META_IO,
    META_MODEL_NAME,
    META_OPSET,
    META_PADDING,
    META_VERSION,
    META_WEIGHTS_SHA256,
    PPM_BINS,
)

SPLIT_PARTS: tuple[str, ...] = ("head", "tail")

HEAD_INPUT = "image"
FEATURES = "features"
ORIGIN = "origin"
LIGHT_MAP = "light_map"

META_SPLIT_PART = "cliplit.split_part"
META_HALO = "cliplit.halo"


def pooled_name(bins: int) -> str:
    """The tail's input holding the frame's mean features over a ``bins`` × ``bins`` grid."""
    return f"pooled_{bins}"


TAIL_INPUTS: tuple[str, ...] = (FEATURES, *(pooled_name(b) for b in PPM_BINS), ORIGIN)


def bin_bounds(size: int, bins: int) -> list[tuple[int, int]]:
    """The bins of ``pooled_<bins>`` along one axis of a ``size``-long frame, as PyTorch's adaptive pooling cuts it:
    bin i is [floor(i·size/bins), ceil((i+1)·size/bins)), so bins overlap where ``size`` is not divisible.

    The one definition in plain integers; the network's exportable pooling (``train.network``) builds the same edges
    as tensors, since they must follow a dynamic frame size inside the ONNX graph."""
    return [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]


def split_metadata(
    part: str, halo: int, *, model_name: str, weights_sha256: str, opset: int, version: str, padding: str
) -> dict[str, str]:
    """The metadata_props of one split graph. ``cliplit.io`` names the part, so the runtime's normal backends refuse
    these graphs (they do not follow the normal contract) instead of misreading them."""
    if part not in SPLIT_PARTS:
        raise ValueError(f"unknown split part {part!r}; expected one of {SPLIT_PARTS}")
    return {
        META_MODEL_NAME: model_name,
        META_WEIGHTS_SHA256: weights_sha256,
        META_IO: f"split-{part}",
        META_SPLIT_PART: part,
        META_HALO: str(halo),
        META_OPSET: str(opset),
        META_VERSION: version,
        META_PADDING: padding,
    }
