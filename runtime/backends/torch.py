"""The PyTorch baseline: the plain eager network, run the way the official CLIP-LIT inference runs it.

It is the yardstick the exported backends are compared with (speed in the benchmarks, fidelity in the tests), so it
deliberately has no optimisations: FP32, eager mode, one forward pass per batch, ``clamp(x / L, 0, 1)`` afterwards.
Torch and the network (``cliplit.train``) are imported when the backend is created, so its options can be built
without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.base import Backend, BackendOptions, Unsupported


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """``device``: GPU index (used when a GPU is present, unless ``cpu_only``); ``threads``: torch's intra-op thread
    count for the whole process; ``padding``: override the checkpoint's padding variant."""

    backend = "torch"
    unsupported: ClassVar[dict[str, Unsupported]] = {
        "precision": Unsupported("the torch backend runs FP32 (--precision chooses OpenVINO's)", "fp32")
    }
    device: int = 0
    cpu_only: bool = False
    threads: int | None = None
    padding: str | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise CliplitError(f"--threads must be at least 1, got {self.threads}")


class TorchBackend(Backend):
    """The released (or any cliplit) enhancer weights in eager PyTorch; I/O variant ``float``."""

    name = "torch"

    def __init__(self, weights: str | os.PathLike[str] = "clip-lit", options: TorchOptions | None = None) -> None:
        options = options or TorchOptions()
        try:
            import torch

            from cliplit.train.checkpoint import load_enhancer
            from cliplit.train.network import apply_light_map
        except ImportError as error:
            raise CliplitError(
                f"--backend torch needs PyTorch ({error}); install it with pip install 'cliplit[export]'"
            ) from error
        super().__init__("float")
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        gpu = torch.cuda.is_available() and not options.cpu_only
        self.device = torch.device(f"cuda:{options.device}" if gpu else "cpu")
        self.checkpoint = load_enhancer(weights, padding=options.padding)
        self.model = self.checkpoint.model.to(self.device).eval()
        self._torch, self._apply_light_map = torch, apply_light_map

    def describe(self) -> str:
        return f"{self.name} ({self.device}, FP32 eager)"

    def details(self) -> dict[str, Any]:
        return {"device": str(self.device)}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            light_map = self.model(x)
            enhanced = self._apply_light_map(x, light_map)
            return {"enhanced": enhanced.cpu().numpy(), "light_map": light_map.cpu().numpy()}

    def close(self) -> None:
        """Drop the model; on a GPU also give its cached memory back, so benchmarks can load the next backend."""
        self.model = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()
