"""Export the network split at its pyramid pooling into two ONNX graphs, for exact tiled inference with bounded memory.

Everything before the pyramid pooling (PPM) is convolutional, and so is everything after it once the PPM's pooled
means are known; only the pooling itself looks at the whole frame. The runtime (:mod:`cliplit.runtime.tiling`)
therefore runs the **head** (image → PPM input features) tile by tile to sum the features over the frame's pooling
bins, then the head again and the **tail** (features + the frame's pooled means + the tile's position → light map)
tile by tile. The tail does the rest of the PPM itself: the 1×1 convolution and PReLU of each pooled level (tiny),
the bilinear upsampling (``align_corners=True``) of exactly the rows and columns the tile covers in the full frame,
written as two small interpolation matrices built from ``origin``, the 3×3 fuse convolution and the rest of the
network. Names and metadata: :mod:`cliplit.core.split_contract`.

The graphs become the split templates (:mod:`cliplit.export.templates`) from which the runtime builds any teacher's
split without torch; tests check that tiled inference with them reproduces the full model.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from cliplit.core.contract import PPM_BINS, random_model_input
from cliplit.core.errors import CliplitError
from cliplit.core.split_contract import FEATURES, HEAD_INPUT, LIGHT_MAP, ORIGIN, TAIL_INPUTS
from cliplit.export.onnx_export import DEFAULT_OPSET
from cliplit.train.network import LightMapNet


class SplitHead(nn.Module):
    """``image`` N×3×h×w → ``features`` N×C×h×w: the network up to the input of its pyramid pooling.

    Holds only the layers it runs (shared with ``net``), so :func:`receptive_radius` sees exactly those.
    """

    def __init__(self, net: LightMapNet) -> None:
        super().__init__()
        self.cond1, self.act = net.cond1, net.act
        self.blocks = nn.Sequential(net.ResidualBlock1, net.ResidualBlock2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.act(self.cond1(image)))


class SplitTail(nn.Module):
    """``features`` of a tile + the frame's pooled means (one N×C×b×b tensor per level of ``PPM_BINS``) + ``origin``
    (int64 [top, left, frame height, frame width]) → the tile's ``light_map`` N×1×h×w.

    What follows the pooling in :class:`~cliplit.train.network.PyramidPooling` and ``LightMapNet.forward``, with the
    upsampling of each pooled level restricted to the tile's rows and columns of the full frame.
    """

    def __init__(self, net: LightMapNet) -> None:
        super().__init__()
        levels = tuple(branch[0].bins for branch in net.PPM1.features)
        if levels != PPM_BINS:
            raise CliplitError(f"the network pools to {levels} bins, the split contract to {PPM_BINS}")
        self.ppm = net.PPM1
        self.body = nn.Sequential(
            net.condx, net.ResidualBlock3, net.ResidualBlock4, net.condy, net.ResidualBlock5, net.ResidualBlock6
        )
        self.cond_add1 = net.cond_add1

    def forward(self, features: torch.Tensor, *pooled_and_origin: torch.Tensor) -> torch.Tensor:
        *pooled, origin = pooled_and_origin
        height, width = features.shape[-2], features.shape[-1]
        branches = [features]
        for (_, conv, act), means, bins in zip(self.ppm.features, pooled, PPM_BINS, strict=True):
            rows = align_corners_weights(origin[0], height, origin[2], bins, features)
            cols = align_corners_weights(origin[1], width, origin[3], bins, features)
            branches.append(torch.matmul(torch.matmul(rows, act(conv(means))), cols.transpose(0, 1)))
        return F.relu(self.cond_add1(self.body(self.ppm.fuse(torch.cat(branches, 1)))))


def align_corners_weights(
    start: torch.Tensor | int, count: int | torch.Tensor, full: torch.Tensor | int, bins: int, like: torch.Tensor
) -> torch.Tensor:
    """The count × bins matrix of bilinear (``align_corners=True``) upsampling weights of rows ``start`` ..
    ``start + count - 1`` of a ``full``-long axis, from ``bins`` cells.

    Computed as PyTorch's CPU kernel does, in float32: source position = index · ((bins − 1) / (full − 1)), the lower
    cell its floor, the upper one the next (clamped to the last cell), weights 1 − frac and frac.
    """
    full = torch.as_tensor(full, device=like.device)
    position = (torch.arange(count, device=like.device) + start).to(torch.float32)
    scale = torch.tensor(float(bins - 1), device=like.device) / (full - 1).to(torch.float32)
    source = position * scale
    last = float(bins - 1)
    lower = torch.clamp(torch.floor(source), max=last)
    frac = (source - lower).unsqueeze(1)
    upper = torch.clamp(lower + 1.0, max=last)
    cells = torch.arange(bins, device=like.device).to(torch.float32).unsqueeze(0)
    weights = (cells == lower.unsqueeze(1)).to(like.dtype) * (1.0 - frac)
    return weights + (cells == upper.unsqueeze(1)).to(like.dtype) * frac


def receptive_radius(module: nn.Module) -> int:
    """How far (in pixels) a chain of padded convolutions looks beyond an output pixel: the halo a tile needs.

    The parts are chains (residual blocks add their input back, which widens nothing), so the radius is the sum of
    every convolution's; the 1×1 convolutions of the pooled levels add nothing.
    """
    radius = 0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            radius += max((k - 1) // 2 * d for k, d in zip(layer.kernel_size, layer.dilation, strict=True))
    return radius


def split_graphs(
    model: LightMapNet, opset: int = DEFAULT_OPSET
) -> tuple[onnx.ModelProto, onnx.ModelProto, tuple[int, int]]:
    """The head and tail graphs of ``model`` (no metadata) and their halos: what the split templates of
    :mod:`cliplit.export.templates` are made from."""
    model = model.eval()
    head, tail = SplitHead(model), SplitTail(model)
    halos = (receptive_radius(head), receptive_radius(tail))
    return _export_part("head", head, opset), _export_part("tail", tail, opset), halos


def _export_part(part: str, module: nn.Module, opset: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    spatial = {0: "batch", 2: "height", 3: "width"}
    if part == "head":
        example: tuple[torch.Tensor, ...] = (torch.from_numpy(random_model_input("float", 1, 37, 41, rng)),)
        names, outputs = [HEAD_INPUT], [FEATURES]
        dynamic_axes = {HEAD_INPUT: spatial, FEATURES: spatial}
    else:
        channels = module.ppm.fuse[0].out_channels
        features = torch.from_numpy(rng.random((1, channels, 37, 41), dtype=np.float32))
        pooled = [torch.from_numpy(rng.random((1, channels, b, b), dtype=np.float32)) for b in PPM_BINS]
        example = (features, *pooled, torch.tensor([3, 5, 67, 93], dtype=torch.int64))
        names, outputs = list(TAIL_INPUTS), [LIGHT_MAP]
        dynamic_axes = {name: {0: "batch"} for name in TAIL_INPUTS if name not in (FEATURES, ORIGIN)}
        dynamic_axes |= {FEATURES: spatial, LIGHT_MAP: spatial}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and deprecation chatter
        torch.onnx.export(
            module,
            example,
            buffer,
            dynamo=False,
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())
