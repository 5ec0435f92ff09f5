"""The model a runtime command runs and the backend options the commands share (``--model``, ``--backend``, ...).

``cliplit enhance`` and ``cliplit serve`` take these flags alike; this dataclass states their defaults once and turns
them into the chosen backend's options (``options_for``), which check what the backend can honour.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliplit.core.cli_settings import setting
from cliplit.runtime.backends import BACKEND_CHOICES, BackendOptions, options_for, select_backend
from cliplit.runtime.backends.openvino import PRECISIONS


@dataclass(frozen=True)
class ModelChoice:
    """Which model runs, on which backend, with how many threads, at which precision, on which GPU."""

    model: str | None = setting(
        None,
        "an .onnx or .engine file, or weights (.pth or a released name) to run; default: the released CLIP-LIT "
        "weights as a cached ONNX model",
    )
    backend: str = setting("auto", "inference backend", choices=BACKEND_CHOICES)
    threads: int | None = setting(None, "CPU threads for OpenVINO/ONNX Runtime/torch (default: all)")
    precision: str | None = setting(
        None,
        "OpenVINO inference precision (default: bf16 on CPUs with native bf16, AVX512_BF16 or AMX, else fp32; "
        "fp32 is also accepted by ONNX Runtime and torch, which run in full precision; refused for a TensorRT engine, "
        "which runs in the precision it was built with)",
        choices=PRECISIONS,
    )
    device: int | None = setting(None, "GPU index for TensorRT and CUDA", default_text="0")

    def backend_name(self) -> str:
        """The backend that runs ``model``: ``backend``, or the one ``auto`` picks for it."""
        return select_backend(self.model, self.backend)

    def backend_options(self) -> BackendOptions:
        """The chosen backend's options with the values given (None: the backend's default)."""
        return options_for(self.backend_name(), threads=self.threads, device=self.device, precision=self.precision)
