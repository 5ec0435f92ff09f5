"""The JSON sidecar written next to every TensorRT engine (``<engine>.json``), and the checks made when loading one.

A serialized engine is only valid for the TensorRT version and the GPU architecture it was built with (or, when
built version-compatible, for the runtimes listed in ``cliplit.core.tensorrt``), and TensorRT's own message for a
mismatch is an opaque deserialization failure. The sidecar records how the engine was made (versions, GPU, profile,
precision, the ONNX file it came from, the measured parity with ONNX Runtime) so the runtime can say exactly what is
wrong and what to do before handing the bytes to TensorRT. Nothing here imports TensorRT: callers pass the running
versions.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError
from cliplit.core.tensorrt import DISPATCH_MODULE, LEAN_MODULE, version_tuple

SIDECAR_FORMAT = "cliplit-tensorrt-engine"
SIDECAR_VERSION = 1


@dataclass
class EngineSidecar:
    """What an engine is and how it was built; ``profile`` holds the min/opt/max input shapes."""

    io: str
    input_name: str
    profile: dict[str, list[int]]
    precision: str  # "fp16" or "fp32"
    fp16_method: str | None  # "builder-flag" (TensorRT 10), "strongly-typed-onnx" (TensorRT 11) or None for FP32
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "8.9"
    onnx_sha256: str
    version_compatible: bool
    cliplit_version: str
    workspace_gib: float
    parity_psnr_db: float | None = None  # the worst PSNR of the engine against ONNX Runtime FP32
    parity: list[dict[str, Any]] = field(default_factory=list)  # {"input": ..., "psnr_db": ...} per checked input
    format: str = SIDECAR_FORMAT
    format_version: int = SIDECAR_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["parity_psnr_db"] = _finite_or_text(self.parity_psnr_db)
        data["parity"] = [{**item, "psnr_db": _finite_or_text(item["psnr_db"])} for item in self.parity]
        return json.dumps(data, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "sidecar") -> EngineSidecar:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CliplitError(f"{source} is not valid JSON ({error}); rebuild the engine with export-engine") from None
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            raise CliplitError(f'{source} is not a cliplit engine sidecar (no "format": "{SIDECAR_FORMAT}")')
        if data.get("format_version", 0) > SIDECAR_VERSION:
            raise CliplitError(f"{source} was written by a newer cliplit (format {data['format_version']}); upgrade")
        known = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls) if f.name not in data and _required(f))
        if missing:
            raise CliplitError(f"{source} lacks {', '.join(missing)}; rebuild the engine with export-engine")
        values = {key: value for key, value in data.items() if key in known}
        if values.get("parity_psnr_db") is not None:
            values["parity_psnr_db"] = float(values["parity_psnr_db"])
        values["parity"] = [{**item, "psnr_db": float(item["psnr_db"])} for item in values.get("parity", [])]
        return cls(**values)


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_sidecar(engine_path: str | os.PathLike[str], sidecar: EngineSidecar, *, overwrite: bool) -> Path:
    """Write the sidecar of ``engine_path`` atomically and return its path."""
    path = sidecar_path(engine_path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(sidecar.to_json(), encoding="utf-8")
    return path


def read_sidecar(engine_path: str | os.PathLike[str]) -> EngineSidecar | None:
    """The sidecar of ``engine_path``, or None when there is none (an engine built by other tools)."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    return EngineSidecar.from_json(path.read_text(encoding="utf-8"), source=str(path))


def check_compatible(
    sidecar: EngineSidecar,
    *,
    engine: str,
    tensorrt_version: str,
    tensorrt_module: str,
    gpu_name: str,
    compute_capability: str,
) -> None:
    """Raise ``CliplitError`` if this TensorRT (module and version) and GPU cannot run the engine of ``sidecar``.

    The contract (docs/tensorrt.md): a plain engine runs only on the full ``tensorrt`` of exactly its version; a
    version-compatible engine embeds the lean runtime of its version, so the full ``tensorrt`` and
    ``tensorrt_dispatch`` of that version or any later one run it, and ``tensorrt_lean`` only of exactly that version.
    """
    rebuild = "rebuild it on this machine with export-engine"
    built, running = version_tuple(sidecar.tensorrt_version), version_tuple(tensorrt_version)
    if tensorrt_module in (LEAN_MODULE, DISPATCH_MODULE) and not sidecar.version_compatible:
        kind = "lean" if tensorrt_module == LEAN_MODULE else "dispatch"
        raise CliplitError(
            f"{engine} was built without --version-compatible, and the {kind} runtime ({tensorrt_module}) only runs "
            f"version-compatible engines: {rebuild} --version-compatible, or install the full tensorrt package"
        )
    if sidecar.version_compatible and running < built:
        raise CliplitError(
            f"{engine} was built with TensorRT {sidecar.tensorrt_version}; this is TensorRT {tensorrt_version}. "
            f"Version-compatible engines run on the TensorRT they were built with and newer: upgrade, or {rebuild}"
        )
    if sidecar.version_compatible and tensorrt_module == LEAN_MODULE and running != built:
        raise CliplitError(
            f"{engine} was built with TensorRT {sidecar.tensorrt_version}; the lean runtime ({LEAN_MODULE}) "
            f"{tensorrt_version} only runs engines built by its own version. Install tensorrt_lean "
            f"{sidecar.tensorrt_version}, or tensorrt_dispatch / the full tensorrt package {tensorrt_version}, which "
            "load the lean runtime embedded in the engine"
        )
    if not sidecar.version_compatible and running != built:
        raise CliplitError(
            f"{engine} was built with TensorRT {sidecar.tensorrt_version} and only runs on that version; this is "
            f"TensorRT {tensorrt_version}: {rebuild} (add --version-compatible for an engine that later TensorRT "
            "versions and the dispatch runtime can run)"
        )
    if compute_capability != sidecar.compute_capability:
        raise CliplitError(
            f"{engine} was built for {sidecar.gpu_name} (compute capability {sidecar.compute_capability}); this GPU "
            f"is {gpu_name} (compute capability {compute_capability}). TensorRT engines are specific to the GPU "
            f"architecture: {rebuild}"
        )


def _finite_or_text(value: float | None) -> float | str | None:
    """JSON has no infinity; a PSNR of identical outputs is stored as the string "inf"."""
    if value is None or math.isfinite(value):
        return value
    return "inf"


def _required(item: Any) -> bool:
    return item.default is MISSING and item.default_factory is MISSING
