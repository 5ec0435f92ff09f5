"""A real-time student of CLIP-LIT: the light map from a small multi-scale encoder, sliced to full resolution.

Why this shape. The teacher's light map is smooth except where the scene itself has edges (sky against a dark
object), and its one non-local part is pyramid pooling over the whole frame. So the student

* works on a 1/4-resolution copy of the frame (average pooling, ``ceil_mode`` so any size down to 1x1 works) and goes
  down to 1/32 with stride-2 convolutions, where a pyramid pooling module (the teacher's own ``PyramidPooling``: bins
  1, 2, 3 and 6 over the whole frame) gives it the same global context as the teacher;
* decodes back to 1/4 resolution (a small U-Net) into per-pixel coefficients of a *local affine model* of the log
  light map in guide features of the full-resolution frame: ``log L = sum_k a_k * g_k + b`` with guide
  ``g = (R, G, B, log(luma + 1/32))``;
* upsamples only those coefficients bilinearly to full resolution and applies them there.

The last step is what a guided filter does: the coefficients are smooth, so bilinear upsampling is harmless, while
the edges come from the full-resolution guide itself, so the light map steps exactly where the image steps and there
are no halos around objects against a bright sky (a plain upsampled light map blurs across the edge and leaves a
bright rim). Full-resolution work is a few dozen operations per pixel; everything else runs on 1/16 of the pixels
or fewer, so the student costs roughly 1,000 FLOP per pixel against the teacher's 555,264.

Every size is computed from the input at run time (``ceil_mode`` pooling, stride-2 convolutions with padding,
``interpolate(size=...)``, the teacher's exportable adaptive pooling), so the ONNX export has fully dynamic height and
width and runs down to the contract's 2x2 minimum. Zero padding (not reflect) is used because feature maps of tiny
inputs shrink to 1x1, where reflect padding is undefined.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cliplit.train.network import PyramidPooling

ARCHITECTURE = "clip-lit-student"
POOL = 4  # the encoder's input is the frame average-pooled by this factor
GUIDE_OFFSET = 1.0 / 32.0  # log(luma + offset): finite at black, and compresses deep shadows like the division does
GUIDE_CHANNELS = 4


@dataclass(frozen=True)
class StudentConfig:
    """Channel widths of the encoder levels (1/4, 1/8, 1/16, 1/32 of the frame)."""

    widths: tuple[int, int, int, int] = (8, 16, 32, 32)

    def to_dict(self) -> dict[str, list[int]]:
        return {key: list(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> StudentConfig:
        return cls(widths=tuple(int(w) for w in data.get("widths", cls.widths)))  # type: ignore[arg-type]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def guide_features(image: torch.Tensor) -> torch.Tensor:
    """The full-resolution guide: the RGB values and the log of their mean (4 channels)."""
    luma = image.mean(dim=1, keepdim=True)
    return torch.cat([image, torch.log(luma + GUIDE_OFFSET)], dim=1)


class StudentNet(nn.Module):
    """Predicts the light map L (N x 1 x H x W) of an RGB image (N x 3 x H x W in [0, 1]), like ``LightMapNet``."""

    architecture = ARCHITECTURE
    padding = "zeros"  # what the export metadata records as the padding variant

    def __init__(self, config: StudentConfig | None = None) -> None:
        super().__init__()
        self.config = config or StudentConfig()
        w4, w8, w16, w32 = self.config.widths
        self.enc4 = _conv(GUIDE_CHANNELS + 1, w4)  # the pooled guide and the log-luma spread inside each cell
        self.enc8 = nn.Sequential(_conv(w4, w8, 2), _conv(w8, w8))
        self.enc16 = nn.Sequential(_conv(w8, w16, 2), _conv(w16, w16))
        self.enc32 = nn.Sequential(_conv(w16, w32, 2), _conv(w32, w32))
        self.context = PyramidPooling(w32)
        self.dec16 = _conv(w32 + w16, w16)
        self.dec8 = _conv(w16 + w8, w8)
        self.dec4 = _conv(w8 + w4, w4)
        self.head = nn.Conv2d(w4, GUIDE_CHANNELS + 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # start from L = 1 (the identity enhancement) everywhere

    def coefficients(self, image: torch.Tensor) -> torch.Tensor:
        """Per-pixel affine coefficients of the log light map at 1/4 resolution (N x 5 x H/4 x W/4)."""
        guide = guide_features(image)
        pooled = F.avg_pool2d(guide, POOL, POOL, ceil_mode=True, count_include_pad=False)
        # local contrast inside each 4x4 cell: mean of squared log-luma minus squared mean, a cheap texture cue
        log_luma = guide[:, 3:4]
        second = F.avg_pool2d(log_luma * log_luma, POOL, POOL, ceil_mode=True, count_include_pad=False)
        spread = torch.sqrt(torch.clamp(second - pooled[:, 3:4] ** 2, min=0.0) + 1e-6)
        e4 = self.enc4(torch.cat([pooled, spread], dim=1))
        e8 = self.enc8(e4)
        e16 = self.enc16(e8)
        e32 = self.context(self.enc32(e16))
        d16 = self.dec16(torch.cat([_resize_to(e32, e16), e16], dim=1))
        d8 = self.dec8(torch.cat([_resize_to(d16, e8), e8], dim=1))
        d4 = self.dec4(torch.cat([_resize_to(d8, e4), e4], dim=1))
        return self.head(d4)

    def log_light_map(self, image: torch.Tensor) -> torch.Tensor:
        coeffs = _resize_to(self.coefficients(image), image)
        guide = guide_features(image)
        return (coeffs[:, :GUIDE_CHANNELS] * guide).sum(dim=1, keepdim=True) + coeffs[:, GUIDE_CHANNELS:]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_light_map(image))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
