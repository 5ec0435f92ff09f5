"""The public API: ``Enhancer`` turns 8-bit BGR frames into enhanced 8-bit BGR frames on any backend.

It is meant to drop into someone else's OpenCV loop::

    from cliplit.runtime.enhancer import Enhancer

    with Enhancer.from_onnx("clip-lit.onnx") as enhancer:      # or from_engine("x.engine"), from_weights("clip-lit")
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.imshow("enhanced", enhancer.enhance(frame))

Everything around the network lives here, so every backend gets it: colour order and layout of the model's I/O
variant (read from the model, never guessed), ``scale`` (run the network at a lower resolution and upsample the light
map, see :mod:`cliplit.runtime.upsample`) and ``temporal_smoothing`` (see :mod:`cliplit.runtime.temporal`). Both
options need the light map, which only ``float`` I/O models output. With neither, a ``float`` model's own
``enhanced`` output is used, so results match the official inference bit for bit up to float rounding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cliplit.core.contract import MIN_SIDE, check_frame_size, model_input_from_bgr
from cliplit.core.errors import CliplitError
from cliplit.core.images import to_bgr8
from cliplit.core.light_map import apply_light_map_bgr8, to_uint8
from cliplit.runtime.backends import Backend, open_backend
from cliplit.runtime.temporal import SCENE_CUT_THRESHOLD, LightMapSmoother
from cliplit.runtime.upsample import UPSAMPLE_METHODS, upsample_light_map


class Enhancer:
    """A loaded model plus the frame-level options; not thread-safe (one per thread or per stream)."""

    def __init__(
        self,
        backend: Backend,
        *,
        scale: float = 1.0,
        upsample: str = "bilinear",
        temporal_smoothing: float = 0.0,
        scene_cut_threshold: float = SCENE_CUT_THRESHOLD,
    ) -> None:
        """Wrap ``backend``; ``scale`` in (0, 1], ``temporal_smoothing`` A in [0, 1) (0 = off)."""
        if not 0.0 < scale <= 1.0:
            raise CliplitError(f"--scale must be in (0, 1], got {scale}")
        if upsample not in UPSAMPLE_METHODS:
            raise CliplitError(f"unknown upsampling {upsample!r}; expected one of {', '.join(UPSAMPLE_METHODS)}")
        if not 0.0 <= temporal_smoothing < 1.0:
            raise CliplitError(f"--temporal-smoothing must be in [0, 1), got {temporal_smoothing}")
        if backend.io != "float" and (scale != 1.0 or temporal_smoothing):
            raise CliplitError(
                f"--scale and --temporal-smoothing need the light map, which a model with io={backend.io} does not "
                "output; use a float-I/O model (export-engine --io float)"
            )
        self.backend = backend
        self.scale = scale
        self.upsample = upsample
        self.temporal_smoothing = temporal_smoothing
        self.smoother = LightMapSmoother(temporal_smoothing, scene_cut_threshold) if temporal_smoothing else None

    @classmethod
    def from_onnx(
        cls, path: str | os.PathLike[str], backend: str = "auto", *, threads: int | None = None, **options: object
    ) -> Enhancer:
        """An exported ONNX model on ONNX Runtime (``auto``/``onnxruntime``), or its released weights on ``torch``."""
        return cls(open_backend(path, backend, threads=threads), **options)

    @classmethod
    def from_engine(cls, path: str | os.PathLike[str], *, device: int = 0, **options: object) -> Enhancer:
        """A TensorRT engine built by ``export-engine --engine``, on the native TensorRT backend."""
        return cls(open_backend(path, "tensorrt", device=device), **options)

    @classmethod
    def from_weights(
        cls, weights: str | os.PathLike[str] = "clip-lit", *, threads: int | None = None, **options: object
    ) -> Enhancer:
        """The PyTorch baseline (needs torch): released name or ``.pth``, run by the plain eager network."""
        return cls(open_backend(weights, "torch", threads=threads), **options)

    @classmethod
    def open(
        cls,
        model: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        *,
        threads: int | None = None,
        device: int = 0,
        **options: object,
    ) -> Enhancer:
        """Whatever ``--model``/``--backend`` name (see :func:`cliplit.runtime.backends.open_backend`)."""
        return cls(open_backend(model, backend, threads=threads, device=device), **options)

    @property
    def io(self) -> str:
        return self.backend.io

    def describe(self) -> str:
        """One line for logs: backend, providers, options."""
        parts = [self.backend.name]
        providers = getattr(self.backend, "providers", None)
        if providers:
            parts.append("/".join(p.removesuffix("ExecutionProvider") for p in providers))
        if self.scale != 1.0:
            parts.append(f"scale {self.scale:g} ({self.upsample})")
        if self.temporal_smoothing:
            parts.append(f"temporal smoothing {self.temporal_smoothing:g}")
        return ", ".join(parts)

    def enhance(self, frame: np.ndarray) -> np.ndarray:
        """Enhance one H×W×3 uint8 BGR frame (grayscale, BGRA and 16-bit are converted) and return H×W×3 uint8 BGR."""
        return self.enhance_batch([frame])[0]

    def enhance_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Enhance consecutive frames; frames of one size run as one batch, in order (temporal smoothing sees them
        in this order)."""
        return self.collect(self.submit(frames))

    def submit(self, frames: Sequence[np.ndarray]) -> list[Pending]:
        """Start enhancing ``frames`` and return at once where the backend can (TensorRT's ``submit``); pass the
        result to :meth:`collect`, in submission order. Lets a pipeline keep two batches in flight."""
        frames = [to_bgr8(frame) for frame in frames]
        pending: list[Pending] = []
        start = 0
        while start < len(frames):
            stop = start + 1
            while stop < len(frames) and frames[stop].shape == frames[start].shape:
                stop += 1
            pending.append(self._submit_same_size(frames[start:stop]))
            start = stop
        return pending

    def collect(self, pending: list[Pending]) -> list[np.ndarray]:
        """The enhanced frames of a :meth:`submit`, in order."""
        results: list[np.ndarray] = []
        for group in pending:
            outputs = group.outputs if group.handle is None else self.backend.wait(group.handle)
            results.extend(self._finish(group.frames, group.network_size, outputs))
        return results

    def reset(self) -> None:
        """Forget temporal state (call between unrelated clips)."""
        if self.smoother is not None:
            self.smoother.reset()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Enhancer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _submit_same_size(self, frames: list[np.ndarray]) -> Pending:
        height, width = frames[0].shape[:2]
        check_frame_size(height, width)
        size = (width, height)
        if self.io == "uint8":
            batch = np.stack(frames)
        else:
            size = (max(MIN_SIDE, round(width * self.scale)), max(MIN_SIDE, round(height * self.scale)))
            if size != (width, height):
                frames_in = [cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames]
            else:
                frames_in = frames
            batch = model_input_from_bgr("float", np.stack(frames_in))
        submit = getattr(self.backend, "submit", None)
        if submit is not None:
            return Pending(frames, size, handle=submit(batch))
        return Pending(frames, size, outputs=self.backend.run(batch))

    def _finish(
        self, frames: list[np.ndarray], network_size: tuple[int, int], outputs: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        if self.io == "uint8":
            return list(outputs["enhanced"])
        full_size = network_size == (frames[0].shape[1], frames[0].shape[0])
        if full_size and self.smoother is None:
            return [to_uint8(enhanced[::-1].transpose(1, 2, 0)) for enhanced in outputs["enhanced"]]
        results = []
        for frame, light_map in zip(frames, outputs["light_map"][:, 0], strict=True):
            if self.smoother is not None:
                light_map = self.smoother.update(light_map, frame)
            light_map = upsample_light_map(light_map, frame, self.upsample)
            results.append(apply_light_map_bgr8(frame, light_map))
        return results


@dataclass
class Pending:
    """Frames of one size on their way through the backend: a backend handle, or the outputs of a synchronous run."""

    frames: list[np.ndarray]
    network_size: tuple[int, int]
    handle: object | None = None
    outputs: dict[str, np.ndarray] | None = None
