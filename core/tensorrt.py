"""Which TensorRT Python module is installed, and what each one can do; imported by the builder and the runtime.

NVIDIA ships three Python frontends of one TensorRT release (one pip package per CUDA major each):

* ``tensorrt`` (``tensorrt-cu12`` / ``tensorrt-cu13``): the full library; builds engines and runs any engine built
  by the same version, and version-compatible engines of the same or an older version;
* ``tensorrt_dispatch`` (``tensorrt-dispatch-cu12`` / ``-cu13``): a small runtime that cannot build and runs only
  version-compatible engines, by loading the lean runtime embedded in the plan;
* ``tensorrt_lean`` (``tensorrt-lean-cu12`` / ``-cu13``): the lean runtime itself; it runs only version-compatible
  engines, and only those built by its own version ("a lean runtime is needed for each version").

Sources: the "Version Compatibility" section of the TensorRT developer guide (docs.nvidia.com/deeplearning/tensorrt,
10.x "Version Compatibility" and 11.x "Engine Compatibility": a version-compatible plan carries a copy of the lean
runtime, which the deserializing runtime loads; "the check is performed by the lean runtime deserializing the plan
data"), NVIDIA's blog on hardware and version compatibility (the three runtimes and their limits) and
``IRuntime::loadRuntime`` in NvInferRuntime.h. docs/tensorrt.md turns this into the table users read. Nothing here
needs a GPU; the module is only imported when asked for.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cliplit.core.errors import CliplitError

FULL_MODULE = "tensorrt"
DISPATCH_MODULE = "tensorrt_dispatch"
LEAN_MODULE = "tensorrt_lean"
#: the order the runtime tries them in: the full library runs every engine it can, the dispatch runtime every
#: version-compatible engine of its version or older, the lean runtime only those of exactly its version
RUNTIME_MODULES = (FULL_MODULE, DISPATCH_MODULE, LEAN_MODULE)
MIN_MAJOR = 10

BUILD_HINT = (
    "building a TensorRT engine needs the full TensorRT package and an NVIDIA GPU: pip install 'cliplit[tensorrt]' "
    "(tensorrt-cu13 and cuda-python 13, NVIDIA driver r580 or newer) or pip install 'cliplit[tensorrt-cu12]' (CUDA "
    "12 builds, for older drivers) on a machine with an NVIDIA GPU and driver"
)
RUNTIME_HINT = (
    "pip install 'cliplit[tensorrt]' (the full TensorRT package, which also builds engines; 'cliplit[tensorrt-cu12]' "
    "for drivers older than r580), or only a runtime for engines built with --version-compatible: "
    "pip install tensorrt-dispatch-cu13 'cuda-python>=13,<14' (or tensorrt-dispatch-cu12 'cuda-python>=12.6,<13'); "
    "TensorRT needs an NVIDIA GPU"
)


def import_tensorrt(*, builder: bool = False) -> ModuleType:
    """The full ``tensorrt`` module or, unless a ``builder`` is needed, the first runtime-only module installed."""
    for module_name in (FULL_MODULE,) if builder else RUNTIME_MODULES:
        try:
            return importlib.import_module(module_name)
        except ImportError:
            continue
    if builder:
        raise CliplitError(BUILD_HINT)
    raise CliplitError(f"TensorRT is not installed: {RUNTIME_HINT}")


def tensorrt_major(trt: ModuleType) -> int:
    """The major version of an imported TensorRT module; older than 10 is refused (the API differs)."""
    major = int(trt.__version__.split(".")[0])
    if major < MIN_MAJOR:
        raise CliplitError(f"TensorRT {trt.__version__} is too old; cliplit needs TensorRT {MIN_MAJOR} or newer")
    return major


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.9.0.34"`` → (10, 9, 0, 34); non-numeric parts (release tags) are dropped."""
    parts = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)
