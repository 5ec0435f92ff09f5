"""The one place outside the runtime's ONNX Runtime backend that opens an ONNX Runtime session.

Exports are verified, the engine's parity is measured and a distillation may take its teacher from an ONNX file, all
on ONNX Runtime's CPU provider: the reference every platform has, whose FP32 kernels the tolerances of
:mod:`cliplit.export.verify` were measured against. The runtime's backend (``cliplit.runtime.backends.onnxruntime``)
opens its own sessions, with the providers and options users choose. ``onnxruntime`` is a base dependency, imported
only when a session is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cliplit.core.errors import CliplitError

if TYPE_CHECKING:
    import onnxruntime


def cpu_session(model: str | os.PathLike[str]) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session of the ONNX file ``model`` on the CPU provider; a missing file is a clear error."""
    import onnxruntime as ort

    path = Path(model)
    if not path.is_file():
        raise CliplitError(f"{path}: no such ONNX model")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
