"""Backend selection: one call turns ``--model`` and ``--backend`` into a loaded :class:`Backend`.

What ``--model`` names decides what can run it:

* ``.onnx`` — ONNX Runtime (``auto``, ``onnxruntime``); ``torch`` runs the released weights the file was exported
  from, found by the SHA-256 in its metadata, so backends can be compared on one model;
* ``.engine`` / ``.plan`` — the native TensorRT backend (``auto``, ``tensorrt``);
* PyTorch weights (a released name such as ``clip-lit``, or a ``.pth``) — ``torch`` runs them directly; ``auto`` and
  ``onnxruntime`` run their cached ONNX export (:mod:`cliplit.runtime.default_model`). No model means ``clip-lit``.

Every backend module is imported only when chosen, so the runtime never loads torch (or TensorRT) unless asked to.
"""

from __future__ import annotations

import os
from pathlib import Path

from cliplit.core.contract import META_WEIGHTS_SHA256
from cliplit.core.errors import CliplitError
from cliplit.core.weights import DEFAULT_WEIGHTS, RELEASED
from cliplit.runtime.backends.base import Backend

BACKEND_CHOICES: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt", "torch")
ENGINE_SUFFIXES = frozenset({".engine", ".plan"})

__all__ = ["BACKEND_CHOICES", "ENGINE_SUFFIXES", "Backend", "open_backend"]


def open_backend(
    model: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    *,
    threads: int | None = None,
    device: int = 0,
) -> Backend:
    """Load ``model`` (an .onnx, an .engine, weights, or None for the released CLIP-LIT) on ``backend``.

    ``threads`` is the CPU thread count (ONNX Runtime, torch); ``device`` the GPU index (TensorRT, CUDA).
    """
    if backend not in BACKEND_CHOICES:
        raise CliplitError(f"unknown backend {backend!r}; expected one of {', '.join(BACKEND_CHOICES)}")
    model = DEFAULT_WEIGHTS if model is None else model
    suffix = Path(model).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        if backend not in ("auto", "tensorrt"):
            raise CliplitError(f"{model} is a TensorRT engine; only --backend tensorrt (or auto) can run it")
        return _tensorrt(model, device)
    if backend == "tensorrt":
        raise CliplitError(
            f"--backend tensorrt needs a TensorRT engine (.engine), not {model}: build one with "
            "`export-engine --onnx model.onnx --engine model.engine`"
        )
    if suffix == ".onnx":
        if backend == "torch":
            return _torch(_released_weights_of(model), threads, device)
        return _onnxruntime(model, threads, device)
    if backend == "torch":
        return _torch(model, threads, device)
    from cliplit.runtime.default_model import ensure_onnx

    return _onnxruntime(ensure_onnx(model), threads, device)


def _onnxruntime(path: str | os.PathLike[str], threads: int | None, device: int) -> Backend:
    from cliplit.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, threads=threads, device=device)


def _tensorrt(path: str | os.PathLike[str], device: int) -> Backend:
    try:
        from cliplit.runtime.backends.tensorrt import TensorRTBackend
    except ImportError as error:
        raise CliplitError(
            f"the TensorRT backend is not available ({error}); install it with pip install 'cliplit[tensorrt]' "
            "(or only tensorrt_lean for engines built with --version-compatible), or run the .onnx with "
            "--backend onnxruntime"
        ) from error
    return TensorRTBackend(path, device=device)


def _torch(weights: str | os.PathLike[str], threads: int | None, device: int) -> Backend:
    try:
        import torch

        from cliplit.runtime.backends.torch import TorchBackend
    except ImportError as error:
        raise CliplitError(
            f"--backend torch needs PyTorch ({error}); install it with pip install 'cliplit[export]'"
        ) from error
    return TorchBackend(weights, device=f"cuda:{device}" if torch.cuda.is_available() else "cpu", threads=threads)


def _released_weights_of(onnx_path: str | os.PathLike[str]) -> str:
    """The released weights an ONNX file was exported from, identified by the SHA-256 in its metadata."""
    from cliplit.runtime.backends.onnxruntime import onnx_metadata

    digest = onnx_metadata(onnx_path).get(META_WEIGHTS_SHA256)
    for name, release in RELEASED.items():
        if release.sha256 == digest:
            return name
    raise CliplitError(
        f"{onnx_path} was not exported from released weights (weights SHA-256 {digest}); the torch backend needs "
        "the weights themselves: pass --model path/to/weights.pth"
    )
