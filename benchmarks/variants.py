"""The bench-only PyTorch variants: the usual tricks applied to the eager FP32 baseline, to compare with.

No runtime backend runs these configurations, so they live here and not in ``cliplit.runtime``; the bench's table
(``cliplit.benchmarks.registry``) lists them as bench-only entries and their records say so. Every variant is the
runtime's ``TorchBackend`` (same weights loading, same ``float`` contract: N×3×H×W RGB in [0, 1] in, ``enhanced``
and ``light_map`` out, NumPy on both sides, so host↔device copies are billed to PyTorch exactly as to ONNX Runtime
and TensorRT) with one trick applied. A variant that cannot run here says why
(``unavailable_reason``) instead of failing the run.

The baseline itself (``torch``: eager FP32, the official inference) is the runtime's ``--backend torch``, opened
through the runtime's registry like every other runtime entry.

- ``torch-channels-last``: eager FP32 in NHWC memory, which oneDNN and cuDNN often prefer for convolutions;
- ``torch-fp16``: eager with FP16 autocast (CUDA only: CPU autocast means bfloat16, a different trade-off);
- ``torch-compile``: TorchInductor with static shapes, recompiled for each frame size (the compile time is the
  record's first call);
- ``torch-fp16-cudagraphs``: FP16 autocast compiled with ``mode="reduce-overhead"``, which replays CUDA graphs to
  remove per-kernel launch costs (CUDA only).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch

from cliplit.export.onnx_export import FloatIO
from cliplit.runtime.backends.torch import TorchBackend, TorchOptions


@dataclass(frozen=True)
class VariantSpec:
    """How one PyTorch variant differs from the eager FP32 baseline."""

    channels_last: bool = False
    fp16: bool = False
    compile_mode: str | None = None
    needs_cuda: bool = False


TORCH_VARIANTS: dict[str, VariantSpec] = {
    "torch-channels-last": VariantSpec(channels_last=True),
    "torch-fp16": VariantSpec(fp16=True, needs_cuda=True),
    "torch-compile": VariantSpec(compile_mode="default"),
    "torch-fp16-cudagraphs": VariantSpec(fp16=True, compile_mode="reduce-overhead", needs_cuda=True),
}


def unavailable_reason(name: str, device: str) -> str | None:
    """Why variant ``name`` cannot run on ``device``, or None when it can."""
    spec = TORCH_VARIANTS[name]
    if spec.needs_cuda and device != "cuda":
        return "needs CUDA (no GPU visible to torch)"
    if spec.compile_mode is not None:
        if device == "cpu" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            return "torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH"
        if device == "cuda" and importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs triton (pip install triton)"
    return None


class TorchVariant(TorchBackend):
    """One PyTorch variant as a contract ``float`` backend: the runtime's baseline, with one trick applied."""

    def __init__(self, weights: str | os.PathLike[str], name: str, device: str, *, threads: int | None = None) -> None:
        if name not in TORCH_VARIANTS:
            raise ValueError(f"unknown PyTorch variant {name!r}; expected one of {', '.join(TORCH_VARIANTS)}")
        super().__init__(weights, TorchOptions(cpu_only=device == "cpu", threads=threads))
        self.name = name
        self.spec = TORCH_VARIANTS[name]
        self._format = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        module = FloatIO(self.model.to(memory_format=self._format)).eval()
        if self.spec.compile_mode is not None:
            torch._dynamo.reset()  # a fresh cache per backend: each frame size compiles once, within the limits
            module = torch.compile(module, mode=self.spec.compile_mode, dynamic=False)
        self._forward = module

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.spec.fp16):
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).contiguous(memory_format=self._format)
            enhanced, light_map = self._forward(x)
            return {
                "enhanced": enhanced.float().contiguous().cpu().numpy(),
                "light_map": light_map.float().contiguous().cpu().numpy(),
            }

    def close(self) -> None:
        self._forward = None
        super().close()
