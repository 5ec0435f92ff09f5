"""A real-time student of CLIP-LIT: a light map predicted at 1/4 resolution, applied through the full-resolution
channel mean.

A 1/4-resolution U-Net (with the teacher's pyramid pooling at 1/32 for its global context) predicts per-pixel
coefficients of ``log L = a * mean + b`` in the channel mean (R + G + B) / 3 (not a luma: equal weights, see
:mod:`cliplit.core.luma`); only those two smooth maps are upsampled, so the light map's edges come from the
full-resolution frame itself, as in a guided filter, without halos. Why this shape, with the measurements and the
variants rejected on the held-out photos: docs/distill.md, "The student".

Every size is computed from the input at run time (``ceil_mode`` pooling, stride-2 convolutions with padding,
``interpolate(size=...)``, the teacher's exportable adaptive pooling), so the ONNX export has fully dynamic height and
width and runs down to the contract's 2x2 minimum.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from cliplit.core.checkpoint import STUDENT as ARCHITECTURE
from cliplit.core.checkpoint import STUDENT_PADDING
from cliplit.train.network import PyramidPooling

POOL = 4  # the encoder's input is the frame average-pooled by this factor
LOG_OFFSET = 1.0 / 32.0  # log(mean + offset) at 1/4 resolution: finite at black, compresses shadows like the division


@dataclass(frozen=True)
class StudentConfig:
    """Channel widths of the encoder levels at 1/4, 1/8, 1/16, ... of the frame (the last gets the pyramid pooling)."""

    widths: tuple[int, ...] = (16, 16, 32, 32)

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"student widths must be two or more positive channel counts, got {self.widths}")

    def to_dict(self) -> dict[str, list[int]]:
        return {"widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> StudentConfig:
        return cls(widths=tuple(int(w) for w in data.get("widths", cls.widths)))


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # replicate padding: the light map near the frame's border continues the inside (zero padding left a bright rim),
    # and unlike reflect padding it is defined for the 1x1 maps of tiny frames
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate")
    return nn.Sequential(conv, nn.ReLU(inplace=True))


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, POOL, POOL, ceil_mode=True, count_include_pad=False)


def channel_mean(image: torch.Tensor) -> torch.Tensor:
    """The mean of R, G and B (N x 1 x H x W), as a 1x3 matrix product: one pass over the frame in ONNX Runtime,
    where a channel mean (ReduceMean) or a 1x1 convolution costs several."""
    n, _, height, width = image.shape
    weights = torch.full((1, 3), 1.0 / 3.0, dtype=image.dtype, device=image.device)
    return torch.matmul(weights, image.reshape(n, 3, height * width)).reshape(n, 1, height, width)


class StudentNet(nn.Module):
    """Predicts the light map L (N x 1 x H x W) of an RGB image (N x 3 x H x W in [0, 1]), like ``LightMapNet``."""

    architecture = ARCHITECTURE
    padding = STUDENT_PADDING  # what the export metadata records as the padding variant

    def __init__(self, config: StudentConfig | None = None) -> None:
        super().__init__()
        self.config = config or StudentConfig()
        widths = self.config.widths
        self.encoder = nn.ModuleList([_conv(4, widths[0])])  # the pooled frame and the log of its channel mean
        self.encoder.extend(nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout)) for cin, cout in pairwise(widths))
        self.context = PyramidPooling(widths[-1])
        self.decoder = nn.ModuleList(_conv(deep + wide, wide) for wide, deep in pairwise(widths))
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1, padding_mode="replicate")  # the slope a, the offset b
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # start from L = 1 (the identity enhancement) everywhere

    def with_bgr_input(self) -> StudentNet:
        """A copy that takes the image in B, G, R channel order and gives the same light map, like
        ``LightMapNet.with_bgr_input``: only the first convolution sees the colour channels in order (the
        channel mean is the same in any order)."""
        copy = deepcopy(self)
        first = copy.encoder[0][0]
        with torch.no_grad():
            first.weight[:, :3].copy_(first.weight[:, :3].flip(1))
        return copy

    def coefficients(self, image: torch.Tensor) -> torch.Tensor:
        """The slope and offset of ``log L`` in the channel mean, at 1/4 resolution (N x 2 x H/4 x W/4)."""
        pooled = _pool(image)
        pooled_mean = pooled.mean(dim=1, keepdim=True)  # channel_mean's quantity, as the shipped graph's ReduceMean
        features = [self.encoder[0](torch.cat([pooled, torch.log(pooled_mean + LOG_OFFSET)], dim=1))]
        for level in self.encoder[1:]:
            features.append(level(features[-1]))
        decoded = self.context(features.pop())
        for skip, level in zip(reversed(features), reversed(self.decoder), strict=True):
            decoded = level(torch.cat([_resize_to(decoded, skip), skip], dim=1))
        return self.head(decoded)

    def log_light_map(self, image: torch.Tensor) -> torch.Tensor:
        """``a * channel_mean(image) + b`` at full resolution. The slope and offset are sliced at 1/4 resolution and
        upsampled one by one, so the exported graph never copies a full-resolution tensor only to cut it up again."""
        coeffs = self.coefficients(image)
        return _resize_to(coeffs[:, :1], image) * channel_mean(image) + _resize_to(coeffs[:, 1:], image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_light_map(image))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
