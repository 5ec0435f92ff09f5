"""Which :class:`~cliplit.runtime.tiling.budget.Tiling` a model gets: its split graphs (exported on first use) with
the caller's threads and device, whole frames for a student, or none where the budget does not apply."""

from __future__ import annotations

import dataclasses
import os

from cliplit.core.weights import DEFAULT_WEIGHTS
from cliplit.runtime.backends.base import BackendOptions
from cliplit.runtime.backends.onnxruntime import OnnxRuntimeOptions
from cliplit.runtime.tiling.budget import STUDENT_BYTES_PER_PIXEL, Tiling
from cliplit.runtime.tiling.session import SplitModel

#: the options of another backend that its tiles' ONNX Runtime sessions take over
TILE_OPTIONS: tuple[str, ...] = ("threads", "device")


def open_tiling(
    model: str | os.PathLike[str] | None,
    backend: str | BackendOptions = "auto",
    max_memory: int | None = None,
    *,
    tile: tuple[int, int] | None = None,
) -> Tiling | None:
    """The :class:`Tiling` of ``model`` as ``Enhancer.open`` gets it, or None where the memory budget does not apply:
    TensorRT engines (their optimisation profile bounds the frame size), models served by a Triton server (the
    memory is the server's) and the torch backend with a padding override (the split model has the checkpoint's own
    padding). A distilled student runs whole frames (``STUDENT_BYTES_PER_PIXEL``; it has no split), checked against
    the budget all the same."""
    from cliplit.runtime.backends import is_student, model_kind
    from cliplit.runtime.backends.torch import TorchOptions
    from cliplit.runtime.models import ensure_split

    model = DEFAULT_WEIGHTS if model is None else model
    options = backend if isinstance(backend, BackendOptions) else None
    kind = model_kind(model)
    if kind in ("engine", "server") or (isinstance(options, TorchOptions) and options.padding is not None):
        return None
    if is_student(model):
        return Tiling(None, max_memory, tile=tile, untiled_bytes_per_pixel=STUDENT_BYTES_PER_PIXEL)
    if options is None or isinstance(options, OnnxRuntimeOptions):
        ort_options = options or OnnxRuntimeOptions()
    else:  # another backend's threads and device carry over to the tiles' sessions (which run FP32 on the CPU/CUDA)
        carried = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name in TILE_OPTIONS}
        ort_options = OnnxRuntimeOptions(**carried)

    def load() -> SplitModel:
        head, tail = ensure_split(model)
        return SplitModel(head, tail, ort_options)

    return Tiling(load, max_memory, tile=tile)
