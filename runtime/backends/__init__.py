"""Backend registry and selection: one call turns ``--model`` and ``--backend`` into a loaded :class:`Backend`.

What ``--model`` names decides what can run it:

* ``.onnx`` — OpenVINO or ONNX Runtime (``auto`` picks, see :func:`auto_onnx`; ``openvino``, ``onnxruntime``);
  ``torch`` runs the released weights the file was exported from, found by the SHA-256 in its metadata, so backends
  can be compared on one model;
* ``.engine`` / ``.plan`` — the native TensorRT backend (``auto``, ``tensorrt``);
* ``triton://host:port/model`` (HTTP) or ``triton+grpc://host:port/model`` — a model on a Triton server (``auto``,
  ``triton``), such as ``cliplit serve`` or a stock Triton with a repository from ``export-engine --triton-repo``;
* PyTorch weights (a released name such as ``clip-lit``, or a ``.pth``) — ``torch`` runs them directly; ``auto`` and
  ONNX backends run their cached ONNX export (:mod:`cliplit.runtime.models`). No model means ``clip-lit``.

Adding a backend is one module (a :class:`Backend` subclass and its options dataclass) plus one line in
``REGISTRY``. Every backend module is imported only when chosen, so the runtime never loads torch (or TensorRT)
unless asked to.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from cliplit.core.checkpoint import is_student_checkpoint
from cliplit.core.contract import META_TEACHER, META_WEIGHTS_SHA256
from cliplit.core.errors import CliplitError
from cliplit.core.weights import BUNDLED, DEFAULT_WEIGHTS, RELEASED
from cliplit.runtime.backends.base import Backend, BackendOptions

ENGINE_SUFFIXES = frozenset({".engine", ".plan"})
SERVER_SCHEMES = ("triton://", "triton+grpc://")


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend lives, what kind of model file it runs and how to install what it needs."""

    module: str
    cls: str
    options: str
    runs: str  # "onnx", "engine", "weights" or "server"
    install: str


REGISTRY: dict[str, BackendSpec] = {
    "onnxruntime": BackendSpec(
        "cliplit.runtime.backends.onnxruntime", "OnnxRuntimeBackend", "OnnxRuntimeOptions", "onnx", "the base install"
    ),
    "openvino": BackendSpec(
        "cliplit.runtime.backends.openvino",
        "OpenVinoBackend",
        "OpenVinoOptions",
        "onnx",
        "pip install 'cliplit[openvino]'",
    ),
    "tensorrt": BackendSpec(
        "cliplit.runtime.backends.tensorrt",
        "TensorRTBackend",
        "TensorRTOptions",
        "engine",
        "pip install 'cliplit[tensorrt]' (or only tensorrt-dispatch-cu13 / -cu12 for engines built with "
        "--version-compatible; docs/tensorrt.md)",
    ),
    "torch": BackendSpec(
        "cliplit.runtime.backends.torch", "TorchBackend", "TorchOptions", "weights", "pip install 'cliplit[export]'"
    ),
    "triton": BackendSpec(
        "cliplit.runtime.backends.triton", "TritonBackend", "TritonOptions", "server", "pip install 'cliplit[serve]'"
    ),
}
BACKEND_CHOICES: tuple[str, ...] = ("auto", *REGISTRY)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (``auto`` must not load every engine to choose)."""
    return importlib.util.find_spec(module) is not None


def onnxruntime_has_gpu() -> bool:
    """Whether the installed onnxruntime offers a GPU execution provider (the onnxruntime-gpu package)."""
    import onnxruntime

    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    return bool(gpu & set(onnxruntime.get_available_providers()))


def auto_onnx(model: str | os.PathLike[str]) -> str:
    """The fastest installed engine for an ONNX model or weights: ONNX Runtime when it has a GPU provider
    (CUDA/TensorRT beat any CPU), else OpenVINO when installed for the teacher (up to 1.6× ONNX Runtime in FP32,
    2.6–5.4× in the bf16 it picks itself on CPUs with native bf16; docs/benchmarks.md), else ONNX Runtime on the CPU,
    as in the base install. A distilled student runs on ONNX Runtime: its fast path is within noise on either
    engine end to end (4–8 % more fps on OpenVINO), and its whole model, which ``--scale``, smoothing and 16-bit
    frames need, took twice ONNX Runtime's time on OpenVINO (full-resolution element-wise passes; docs/distill.md)."""
    if not onnxruntime_has_gpu() and installed("openvino") and not is_student(model):
        return "openvino"
    return "onnxruntime"


def is_student(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` is a distilled student: an export carrying a teacher in its metadata, a bundled student
    (``clip-lit-rt``), or a student checkpoint (read without torch, never running code from the file)."""
    if model_kind(model) == "onnx":
        from cliplit.runtime.backends.onnxruntime import onnx_metadata

        return Path(model).is_file() and META_TEACHER in onnx_metadata(model)
    if str(model) in BUNDLED:
        return True
    if str(model) in RELEASED or not Path(model).is_file():
        return False
    return is_student_checkpoint(model)


#: what ``auto`` picks for each kind of model file, decided when asked (it depends on what is installed)
AUTO: dict[str, Callable[[str | os.PathLike[str]], str]] = {
    "onnx": auto_onnx,
    "engine": lambda model: "tensorrt",
    "weights": auto_onnx,
    "server": lambda model: "triton",
}

__all__ = [
    "BACKEND_CHOICES",
    "ENGINE_SUFFIXES",
    "REGISTRY",
    "Backend",
    "BackendOptions",
    "open_backend",
    "options_for",
    "select_backend",
]


def model_kind(model: str | os.PathLike[str]) -> str:
    """ "server" (a triton:// URL), "engine", "onnx" or "weights" (a released name or a .pth), from the suffix."""
    if str(model).startswith(SERVER_SCHEMES):
        return "server"
    suffix = Path(model).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    return "onnx" if suffix == ".onnx" else "weights"


def select_backend(model: str | os.PathLike[str] | None, backend: str = "auto") -> str:
    """The registered backend that runs ``model`` for ``--backend backend``, or a clear error."""
    if backend not in BACKEND_CHOICES:
        raise CliplitError(f"unknown backend {backend!r}; expected one of {', '.join(BACKEND_CHOICES)}")
    model = DEFAULT_WEIGHTS if model is None else model
    kind = model_kind(model)
    if backend == "auto":
        return AUTO[kind](model)
    runs = REGISTRY[backend].runs
    if (kind == "server") != (runs == "server"):
        raise CliplitError(
            f"--backend {backend} cannot run {model}: only --backend triton (or auto) runs a model on a Triton server, "
            "given as triton://host:port/model"
        )
    if kind == "engine" and runs != "engine":
        raise CliplitError(f"{model} is a TensorRT engine; only --backend tensorrt (or auto) can run it")
    if runs == "engine" and kind != "engine":
        raise CliplitError(
            f"--backend {backend} needs a TensorRT engine (.engine), not {model}: build one with "
            "`export-engine --onnx model.onnx --engine model.engine`"
        )
    return backend


def options_class(backend: str) -> type[BackendOptions]:
    """The options dataclass of a registered backend (its module is imported; none imports its engine eagerly)."""
    return getattr(_module(backend), REGISTRY[backend].options)


def options_for(backend: str, **values: object) -> BackendOptions:
    """``backend``'s options from command-line style values (``--threads``, ``--device``, ``--precision``): each is
    set on the backend's options, and one it cannot honour is a :class:`CliplitError` with the reason
    (:meth:`BackendOptions.from_values`). None means "not given": the backend's default."""
    return options_class(backend).from_values(**values)


def open_backend(model: str | os.PathLike[str] | None = None, backend: str | BackendOptions = "auto") -> Backend:
    """Load ``model`` (an .onnx, an .engine, weights, or None for the released CLIP-LIT).

    ``backend`` is a name (``auto`` or a registered backend, with default options) or a backend's options object,
    which selects that backend.
    """
    options = backend if isinstance(backend, BackendOptions) else None
    name = select_backend(model, options.backend if options is not None else backend)
    options = options if options is not None else options_class(name)()
    model = DEFAULT_WEIGHTS if model is None else model
    kind, runs = model_kind(model), REGISTRY[name].runs
    if runs == "weights" and kind == "onnx":
        model = _released_weights_of(model)
    elif runs == "onnx" and kind == "weights":
        from cliplit.runtime.models import ensure_onnx

        model = ensure_onnx(model)
    return _load(name, model, options)


def _load(name: str, model: str | os.PathLike[str], options: BackendOptions) -> Backend:
    return getattr(_module(name), REGISTRY[name].cls)(model, options)


def _module(name: str) -> ModuleType:
    spec = REGISTRY[name]
    try:
        return importlib.import_module(spec.module)
    except ImportError as error:
        raise CliplitError(f"the {name} backend is not available ({error}); install it with {spec.install}") from error


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
