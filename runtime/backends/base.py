"""The interface every inference backend implements, and the base of their typed options.

A backend runs one model that follows the ONNX I/O contract (``cliplit.core.contract``): it takes a batch in the
model's input layout and returns the model's named outputs as NumPy arrays. Pre- and post-processing around it
(scaling, temporal smoothing, colour conversions) lives in the enhancer, so every backend gets it for free.

Everything a caller may use is declared here — ``name``, ``io``, ``run``, the asynchronous ``submit``/``wait`` pair
and its ``max_in_flight`` limit, ``describe``, ``details``, ``close`` and ``open_coefficients`` (a distilled
student's fast path, where the engine offers it) — so callers never probe a backend for
optional methods. Backends that cannot overlap work inherit the synchronous ``submit``/``wait``. Each backend has a
frozen dataclass of options (``Options``), subclassing :class:`BackendOptions`, that names the backend it
configures: passing one to :func:`cliplit.runtime.backends.open_backend` picks that backend, as vs-mlrt's
``backend=`` argument does. The shared command-line options (``--threads``, ``--device``, ``--precision``) reach it
through :meth:`BackendOptions.from_values`, which refuses one the backend cannot honour instead of dropping it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeAlias, TypeVar

import numpy as np

from cliplit.core.contract import io_spec
from cliplit.core.errors import CliplitError

#: a student's coefficients graph on an engine: N×3×h×w float32 pooled frames (RGB in [0, 1]) → N×2×h×w
#: coefficient maps (``cliplit.core.graphs.COEFFICIENTS``); safe to call from several threads at once
CoefficientsRunner: TypeAlias = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Unsupported:
    """A shared option a backend has no field for: the one value it runs with anyway (``honoured``, given without
    harm; None: no value) and why any other is refused."""

    reason: str
    honoured: object = None


Options = TypeVar("Options", bound="BackendOptions")


@dataclass(frozen=True)
class BackendOptions:
    """Options of one backend; subclasses set ``backend`` to the registered name they configure, validate their
    fields in ``__post_init__`` and list in ``unsupported`` the shared options they cannot honour, with the reason."""

    backend: ClassVar[str] = ""
    unsupported: ClassVar[dict[str, Unsupported]] = {}

    @classmethod
    def from_values(cls: type[Options], **values: object) -> Options:
        """These options from command-line style values, None meaning "not given" (the backend's default).

        A value for an option the backend has no field for is a :class:`CliplitError` saying which option, which
        backend and why, unless it is the one value the backend runs with anyway: ``--precision fp32`` is what ONNX
        Runtime does, but an FP16 TensorRT engine cannot honour it, and OpenVINO has no GPU index for ``--device``.
        """
        names = {field.name for field in fields(cls)}
        for name, value in values.items():
            if value is None or name in names:
                continue
            refusal = cls.unsupported.get(name)
            if refusal is None:
                raise CliplitError(
                    f"the {cls.backend} backend has no option {name!r} (it has {', '.join(sorted(names))})"
                )
            if value != refusal.honoured:
                flag = "--" + name.replace("_", "-")
                raise CliplitError(f"{flag} {value} does not apply to --backend {cls.backend}: {refusal.reason}")
        return cls(**{name: value for name, value in values.items() if value is not None and name in names})


@dataclass(frozen=True)
class Completed:
    """The handle of a batch that already ran (what the synchronous ``submit`` returns)."""

    outputs: dict[str, np.ndarray]


class Backend(ABC):
    """One loaded model on one engine."""

    #: the registered name (or a benchmark configuration's), used on the command line and in benchmark tables
    name: str = ""
    #: how many submitted batches may await ``wait`` at once; None: no limit (the synchronous default). Callers
    #: keeping several batches in flight wait for the oldest before submitting past it (``Enhancer`` does)
    max_in_flight: int | None = None

    def __init__(self, io: str, outputs: tuple[str, ...] | None = None) -> None:
        #: the contract variant of the loaded model: "float" (N×3×H×W RGB in [0,1]) or "uint8" (N×H×W×3 BGR)
        self.io = io
        #: the contract outputs ``run`` returns: all of the variant's unless the model was exported with fewer
        self.outputs = io_spec(io, outputs).output_names

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on ``batch`` (contract input layout) and return its outputs by contract name."""

    def submit(self, batch: np.ndarray) -> object:
        """Start running ``batch`` and return a handle for :meth:`wait`; backends that cannot overlap run it now."""
        return Completed(self.run(batch))

    def wait(self, handle: object) -> dict[str, np.ndarray]:
        """The outputs of a submitted batch, blocking until they are ready."""
        if not isinstance(handle, Completed):
            raise TypeError(f"{type(self).__name__}.wait() got {type(handle).__name__}, not one of its handles")
        return handle.outputs

    def describe(self) -> str:
        """One line for logs: the engine and how it runs (providers, device, precision)."""
        return self.name

    def details(self) -> dict[str, Any]:
        """Machine-readable facts for benchmark records (providers, precision, ...); empty by default."""
        return {}

    def open_coefficients(self) -> CoefficientsRunner | None:
        """The loaded student's coefficients graph on this backend's engine and settings, for the runtime's fast path
        (:mod:`cliplit.runtime.student_fast`), or None where there is none: the default, and for models that are not
        a student's float export (then the whole model runs)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook: most backends free everything on garbage collection
        """Release device memory and other resources early."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
