"""The CLIP-LIT enhancement network, layer for layer the released model.

One module serves training, export and the PyTorch baseline. Parameter names match the released state dict (after
its ``module.`` prefix is stripped), so the official weights load with ``strict=True``.

Two padding variants exist because the released weights were trained with zero padding on the four outer
convolutions (``cond1``, ``condx``, ``condy``, ``cond_add1``) and are run at test time with reflect padding there:
``"test"`` reproduces the official inference, ``"train"`` is what training optimises.
"""

from __future__ import annotations

from collections import OrderedDict
from copy import deepcopy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cliplit.core.contract import LIGHT_MAP_EPS, PPM_BINS
from cliplit.core.errors import CliplitError

Padding = Literal["test", "train"]
PADDINGS: tuple[str, ...] = ("test", "train")


def adaptive_avg_pool2d_exportable(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Adaptive average pooling written as two matrix products, for any (dynamic) input size.

    ONNX has no adaptive pooling op for outputs larger than 1x1, and the exporters only handle static sizes divisible
    by the bin count. Row bin i covers rows [floor(i*H/b), ceil((i+1)*H/b)), exactly PyTorch's boundaries; averaging
    along each axis with a b x H (and b x W) matrix of 1/count weights gives the same result with ops every engine
    has (Range, Div, comparisons, MatMul).
    """
    rows = _bin_matrix(x.shape[-2], bins, x)
    cols = _bin_matrix(x.shape[-1], bins, x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def _bin_matrix(size: int | torch.Tensor, bins: int, like: torch.Tensor) -> torch.Tensor:
    """The bins x size averaging matrix of adaptive pooling along one axis."""
    index = torch.arange(bins, device=like.device).unsqueeze(1)
    start = torch.div(index * size, bins, rounding_mode="floor")
    end = torch.div((index + 1) * size + bins - 1, bins, rounding_mode="floor")
    position = torch.arange(size, device=like.device).unsqueeze(0)
    inside = ((position >= start) & (position < end)).to(like.dtype)
    return inside / (end - start).to(like.dtype)


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d`` in eager mode; the exportable matrix form while exporting to ONNX."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return adaptive_avg_pool2d_exportable(x, self.bins)
        return F.adaptive_avg_pool2d(x, self.bins)


class PyramidPooling(nn.Module):
    """PSPNet-style pyramid pooling: pooled context at several scales, upsampled and fused with the input."""

    def __init__(self, channels: int, bins: tuple[int, ...] = PPM_BINS) -> None:
        super().__init__()
        branch = channels // len(bins)
        self.features = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool(b), nn.Conv2d(channels, branch, 1, bias=False), nn.PReLU()) for b in bins
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + branch * len(bins), channels, 3, padding=1, bias=False), nn.PReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        branches = [x]
        branches += [F.interpolate(f(x), size, mode="bilinear", align_corners=True) for f in self.features]
        return self.fuse(torch.cat(branches, 1))


class ResidualBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with a skip connection (reflect in both variants)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, padding_mode="reflect")
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, padding_mode="reflect")
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + x)


class LightMapNet(nn.Module):
    """Predicts the light map L (N x 1 x H x W) of an RGB image x (N x 3 x H x W in [0, 1])."""

    def __init__(self, padding: Padding = "test", channels: int = 32) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding variant {padding!r}; expected one of {PADDINGS}")
        self.padding = padding
        outer = "reflect" if padding == "test" else "zeros"
        wide = channels * 2
        self.cond1 = nn.Conv2d(3, channels, 3, padding=1, padding_mode=outer)
        self.ResidualBlock1 = ResidualBlock(channels)
        self.ResidualBlock2 = ResidualBlock(channels)
        self.PPM1 = PyramidPooling(channels)
        self.condx = nn.Conv2d(channels, wide, 3, padding=1, padding_mode=outer)
        self.ResidualBlock3 = ResidualBlock(wide)
        self.ResidualBlock4 = ResidualBlock(wide)
        self.condy = nn.Conv2d(wide, channels, 3, padding=1, padding_mode=outer)
        self.ResidualBlock5 = ResidualBlock(channels)
        self.ResidualBlock6 = ResidualBlock(channels)
        self.cond_add1 = nn.Conv2d(channels, 1, 3, padding=1, padding_mode=outer)
        self.act = nn.LeakyReLU(0.2)

    def with_bgr_input(self) -> LightMapNet:
        """A copy that takes x in B, G, R channel order and gives the same light map: the first convolution's input
        channels are swapped, the only place where the order matters. Graphs fed with BGR frames (the uint8 export)
        then need no channel reorder, which costs a full-resolution pass each way in ONNX Runtime."""
        copy = deepcopy(self)
        with torch.no_grad():
            copy.cond1.weight.copy_(self.cond1.weight.flip(1))
        return copy

    def head(self) -> SplitHead:
        """The layers before the pyramid pooling (see :class:`SplitHead`)."""
        return SplitHead(self)

    def body(self) -> nn.Sequential:
        """The layers between the pyramid pooling and the output convolution ``cond_add1``, in order."""
        return nn.Sequential(
            self.condx, self.ResidualBlock3, self.ResidualBlock4, self.condy, self.ResidualBlock5, self.ResidualBlock6
        )

    def split(self) -> tuple[SplitHead, SplitTail]:
        """(head, tail): the network cut at its pyramid pooling, for exact tiled inference (see :class:`SplitTail`)."""
        return self.head(), SplitTail(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.cond_add1(self.body()(self.PPM1(self.head()(x)))))


class SplitHead(nn.Sequential):
    """``image`` N×3×h×w → ``features`` N×C×h×w: the network's layers before its pyramid pooling, in order.

    Holds only the layers it runs (the network's own), so a tile's halo can be read off its convolutions; purely
    convolutional, so the tiler runs it tile by tile.
    """

    def __init__(self, net: LightMapNet) -> None:
        blocks = nn.Sequential(net.ResidualBlock1, net.ResidualBlock2)
        super().__init__(OrderedDict(cond1=net.cond1, act=net.act, blocks=blocks))


class SplitTail(nn.Module):
    """``features`` of a tile + the frame's pooled means (one N×C×b×b tensor per level of ``PPM_BINS``) + ``origin``
    (int64 [top, left, frame height, frame width]) → the tile's ``light_map`` N×1×h×w.

    Everything before the pyramid pooling is convolutional, and so is everything after it once the pooled means of
    the whole frame are known: the tail is what follows the pooling in :class:`PyramidPooling` and
    :meth:`LightMapNet.forward`, with the upsampling of each pooled level restricted to the tile's rows and columns of
    the full frame (two small interpolation matrices built from ``origin``).
    """

    def __init__(self, net: LightMapNet) -> None:
        super().__init__()
        levels = tuple(branch[0].bins for branch in net.PPM1.features)
        if levels != PPM_BINS:
            raise CliplitError(f"the network pools to {levels} bins, the split contract to {PPM_BINS}")
        self.ppm = net.PPM1
        self.body = net.body()
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


def apply_light_map(x: torch.Tensor, light_map: torch.Tensor, eps: float = LIGHT_MAP_EPS) -> torch.Tensor:
    """The enhanced image clamp(x / max(L, eps), 0, 1); see ``LIGHT_MAP_EPS`` for why the guard is harmless."""
    return torch.clamp(x / torch.clamp(light_map, min=eps), 0.0, 1.0)
