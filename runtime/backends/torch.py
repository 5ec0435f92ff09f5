"""The PyTorch baseline: the plain eager network, run the way the official CLIP-LIT inference runs it.

It is the yardstick the exported backends are compared with (speed in the benchmarks, fidelity in the tests), so it
deliberately has no optimisations: FP32, eager mode, one forward pass per batch, ``clamp(x / L, 0, 1)`` afterwards.
This module imports torch and is only imported when the torch backend is chosen.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.base import Backend
from cliplit.train.checkpoint import load_enhancer
from cliplit.train.network import apply_light_map


class TorchBackend(Backend):
    """The released (or any cliplit) enhancer weights in eager PyTorch; I/O variant ``float``."""

    name = "torch"

    def __init__(
        self,
        weights: str | os.PathLike[str] = "clip-lit",
        *,
        device: str | None = None,
        threads: int | None = None,
        padding: str | None = None,
    ) -> None:
        """``device`` is a torch device ("cpu", "cuda:0"; default: the first GPU if any); ``threads`` sets torch's
        intra-op thread count for the whole process."""
        super().__init__("float")
        if threads is not None:
            if threads < 1:
                raise CliplitError(f"--threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
        self.checkpoint = load_enhancer(weights, padding=padding)
        self.model = self.checkpoint.model.to(self.device).eval()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            light_map = self.model(x)
            enhanced = apply_light_map(x, light_map)
            return {"enhanced": enhanced.cpu().numpy(), "light_map": light_map.cpu().numpy()}

    def close(self) -> None:
        """Drop the model; on a GPU also give its cached memory back, so benchmarks can load the next backend."""
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
