"""The runtime's ``--scale`` modes as benchmarkable backends: the real ``Enhancer`` around a runtime backend.

``--scale S`` runs the network at S× the frame size and upsamples the light map, so what it costs and what it loses
depends on the runtime's resizing, upsampling and division as much as on the network. Benchmarking it therefore goes
through ``cliplit.runtime.enhancer.Enhancer`` itself, wrapped as a ``uint8`` backend (BGR frames in and out); a thin
recorder between the enhancer and the inner backend notes the size the network actually ran at, for the FLOP count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cliplit.runtime.backends.base import Backend
from cliplit.runtime.enhancer import Enhancer


class _ShapeRecorder(Backend):
    """Passes batches to ``inner`` unchanged (synchronously or not, as ``inner`` does) and remembers the last batch's
    height and width."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.io, inner.outputs)
        self.inner = inner
        self.name = inner.name
        self.last_size: tuple[int, int] | None = None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.wait(self.submit(batch))

    def submit(self, batch: np.ndarray) -> object:
        self.last_size = tuple(batch.shape[-2:]) if self.io == "float" else tuple(batch.shape[1:3])
        return self.inner.submit(batch)

    def wait(self, handle: object) -> dict[str, np.ndarray]:
        return self.inner.wait(handle)

    def describe(self) -> str:
        return self.inner.describe()

    def details(self) -> dict[str, Any]:
        return self.inner.details()

    def close(self) -> None:
        self.inner.close()


class ScaledBackend(Backend):
    """``Enhancer(inner, scale=scale, upsample=upsample)`` behind the ``uint8`` contract (N×H×W×3 BGR)."""

    def __init__(self, inner: Backend, name: str, scale: float, upsample: str) -> None:
        super().__init__("uint8")
        self.name = name
        self._recorder = _ShapeRecorder(inner)
        self.enhancer = Enhancer(self._recorder, scale=scale, upsample=upsample)

    def describe(self) -> str:
        return self.enhancer.describe()

    def details(self) -> dict[str, Any]:
        """The inner backend's details and ``network_size``: (height, width) the network ran at in the last call."""
        return {**self._recorder.details(), "network_size": self._recorder.last_size}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"enhanced": np.stack(self.enhancer.enhance_batch(list(batch)))}

    def close(self) -> None:
        self.enhancer.close()
