"""The interface every inference backend implements (ONNX Runtime, TensorRT, the PyTorch baseline).

A backend runs one model that follows the ONNX I/O contract (``cliplit.core.contract``): it takes a batch in the
model's input layout and returns the model's named outputs as NumPy arrays. Pre- and post-processing around it
(scaling, temporal smoothing, colour conversions) lives in the enhancer, so every backend gets it for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """One loaded model on one engine."""

    #: short name used on the command line and in benchmark tables
    name: str = ""

    def __init__(self, io: str) -> None:
        #: the contract variant of the loaded model: "float" (N×3×H×W RGB in [0,1]) or "uint8" (N×H×W×3 BGR)
        self.io = io

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on ``batch`` (contract input layout) and return its outputs by contract name."""

    def close(self) -> None:  # noqa: B027 - optional hook: most backends free everything on garbage collection
        """Release device memory and other resources early."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
