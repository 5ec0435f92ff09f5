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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cliplit.train.network import PyramidPooling

ARCHITECTURE = "clip-lit-student"
POOL = 4  # the encoder's input is the frame average-pooled by this factor
GUIDE_OFFSET = 1.0 / 32.0  # log(luma + offset): finite at black, and compresses deep shadows like the division does
BASE_GUIDE = 4  # R, G, B, log-luma


@dataclass(frozen=True)
class StudentConfig:
    """Channel widths of the encoder levels (1/4, 1/8, 1/16, 1/32 of the frame) and the number of learned
    full-resolution guide features; ``guided=False`` is the ablation that predicts the log light map itself at 1/4
    resolution and upsamples it bilinearly (no full-resolution guide at all)."""

    widths: tuple[int, int, int, int] = (8, 16, 32, 32)
    guide_features: int = 6
    guided: bool = True

    def to_dict(self) -> dict[str, list[int] | int | bool]:
        return {"widths": list(self.widths), "guide_features": self.guide_features, "guided": self.guided}

    @classmethod
    def from_dict(cls, data: dict) -> StudentConfig:
        widths = tuple(int(w) for w in data.get("widths", cls.widths))
        features = int(data.get("guide_features", cls.guide_features))
        return cls(widths=widths, guide_features=features, guided=bool(data.get("guided", True)))  # type: ignore[arg-type]

    @property
    def coefficients(self) -> int:
        """Maps the encoder predicts: one weight per guide channel and an offset, or the log light map alone."""
        return BASE_GUIDE + self.guide_features + 1 if self.guided else 1


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # replicate padding: the light map near the frame's border continues the inside (zero padding left a bright rim),
    # and unlike reflect padding it is defined for the 1x1 maps of tiny frames
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate")
    return nn.Sequential(conv, nn.ReLU(inplace=True))


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def base_guide(image: torch.Tensor) -> torch.Tensor:
    """The fixed part of the guide: the RGB values and the log of their mean (4 channels)."""
    luma = image.mean(dim=1, keepdim=True)
    return torch.cat([image, torch.log(luma + GUIDE_OFFSET)], dim=1)


class StudentNet(nn.Module):
    """Predicts the light map L (N x 1 x H x W) of an RGB image (N x 3 x H x W in [0, 1]), like ``LightMapNet``."""

    architecture = ARCHITECTURE
    padding = "replicate"  # what the export metadata records as the padding variant

    def __init__(self, config: StudentConfig | None = None) -> None:
        super().__init__()
        self.config = config or StudentConfig()
        w4, w8, w16, w32 = self.config.widths
        self.enc4 = _conv(BASE_GUIDE + 1, w4)  # the pooled base guide and the log-luma spread inside each cell
        self.enc8 = nn.Sequential(_conv(w4, w8, 2), _conv(w8, w8))
        self.enc16 = nn.Sequential(_conv(w8, w16, 2), _conv(w16, w16))
        self.enc32 = nn.Sequential(_conv(w16, w32, 2), _conv(w32, w32))
        self.context = PyramidPooling(w32)
        self.dec16 = _conv(w32 + w16, w16)
        self.dec8 = _conv(w16 + w8, w8)
        self.dec4 = _conv(w8 + w4, w4)
        self.head = nn.Conv2d(w4, self.config.coefficients, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # start from L = 1 (the identity enhancement) everywhere
        features = self.config.guide_features if self.config.guided else 0
        # learned local features of the full-resolution frame (3x3, zero padding: one conv at full resolution must
        # stay a single fused ONNX Conv); they carry the pixel-level texture the teacher's light map has in foliage
        self.local = nn.Conv2d(BASE_GUIDE, features, 3, padding=1) if features else None

    def coefficients(self, image: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's per-pixel maps at 1/4 resolution (N x coefficients x H/4 x W/4); ``guide`` is
        ``base_guide(image)`` when the caller has it already."""
        guide = base_guide(image) if guide is None else guide
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
        """``sum_k a_k * guide_k + b`` at full resolution, written for the exported graph's sake: the coefficient maps
        are split at 1/4 resolution (not sliced after upsampling) and the learned features are never concatenated
        with the base guide, so no full-resolution tensor is copied only to be cut up again (that took a quarter of
        the student's time in ONNX Runtime at 720p)."""
        guide = base_guide(image)
        coeffs = self.coefficients(image, guide)
        if not self.config.guided:
            return _resize_to(coeffs, image)
        log_map = (_resize_to(coeffs[:, :BASE_GUIDE], image) * guide).sum(dim=1, keepdim=True)
        log_map = log_map + _resize_to(coeffs[:, -1:], image)
        if self.local is not None:
            features = F.relu(self.local(guide))
            log_map = log_map + (_resize_to(coeffs[:, BASE_GUIDE:-1], image) * features).sum(dim=1, keepdim=True)
        return log_map

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_light_map(image))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_flops_per_pixel(model: nn.Module, height: int = 720, width: int = 1280) -> float:
    """Convolution FLOPs (2 per multiply-add) of one forward pass per input pixel, counted with hooks at a frame size.

    Counted on the real run, so strides, pooled levels and the pyramid pooling's small maps are all as they are; the
    element-wise work at full resolution (guide, bilinear upsampling of 5 coefficient maps, the affine model, exp,
    the division) is not counted, as usual for CNN FLOP counts: about 60 operations per pixel.
    """
    total = 0

    def hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * kernel * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return total / (height * width)
