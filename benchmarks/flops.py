"""The network's arithmetic cost per frame, counted analytically from its convolution shapes.

Convolutions are all of CLIP-LIT's work: every one is stride 1 with "same" padding, so a k×k convolution from C_in to
C_out channels costs 2·C_in·C_out·k² FLOPs (one multiply and one add per weight) per output pixel. All of them run at
the full frame size except the pyramid-pooling branches' 1×1 convolutions, which run on b×b pooled maps (b = 1, 2, 3,
6). Element-wise work (activations, the residual additions, padding, pooling, the bilinear upsampling and the final
division) adds well under 1 % and is not counted, as is usual for FLOP counts of CNNs. The result, about 555 kFLOP per
pixel, turns a latency into achieved GFLOP/s, comparable with a matrix product's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cliplit.train.network import PyramidPooling
from cliplit.train.student import StudentNet


@dataclass(frozen=True)
class ConvCost:
    """One convolution: its name, FLOPs per output pixel, and the pooled side it runs at (None: full frame)."""

    name: str
    flops_per_pixel: int
    pooled_side: int | None = None


def conv_costs(model: nn.Module) -> list[ConvCost]:
    """Every convolution of ``model`` with its per-pixel cost and the resolution it runs at."""
    pooled: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, PyramidPooling):
            for index, branch in enumerate(module.features):
                for sub_name, sub in branch.named_modules():
                    if isinstance(sub, nn.Conv2d):
                        pooled[_join(name, f"features.{index}", sub_name)] = branch[0].bins
    costs = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        kh, kw = module.kernel_size
        if module.stride != (1, 1) or module.dilation != (1, 1) or module.padding != ((kh - 1) // 2, (kw - 1) // 2):
            raise ValueError(f"{name}: only stride-1 'same' convolutions are modelled, got {module}")
        per_pixel = 2 * (module.in_channels // module.groups) * module.out_channels * kh * kw
        costs.append(ConvCost(name, per_pixel, pooled.get(name)))
    return costs


def flops_per_frame(model: nn.Module, height: int, width: int) -> int:
    """FLOPs of one ``height``×``width`` frame (convolutions only; see the module docstring).

    A distilled student (strided, multi-resolution) is counted on a real forward pass at that size instead, where
    every convolution's output size is what it is; the teacher's closed form avoids running it at 4K.
    """
    if isinstance(model, StudentNet):
        return hooked_conv_flops(model, height, width)
    total = 0
    for cost in conv_costs(model):
        pixels = height * width if cost.pooled_side is None else cost.pooled_side**2
        total += cost.flops_per_pixel * pixels
    return total


def flops_per_pixel(model: nn.Module) -> int:
    """FLOPs per pixel of the full-resolution convolutions: the cost that grows with the frame (the ~555 k)."""
    return sum(cost.flops_per_pixel for cost in conv_costs(model) if cost.pooled_side is None)


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def hooked_conv_flops(model: nn.Module, height: int, width: int) -> int:
    """Convolution FLOPs (2 per multiply-add) of one forward pass on a ``height``×``width`` frame, counted with
    forward hooks on every ``Conv2d`` that runs.

    Counted on the real run, so strides, pooled levels and the pyramid pooling's small maps are all as they are (the
    students'); for the teacher it is the check of the closed form. Element-wise work is not counted, as above.
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
    return total
