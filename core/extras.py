"""Which optional extra brings a missing module, so that a command says what to install instead of a traceback.

The base install (``pip install cliplit``) is the lean runtime; training, exporting, benchmarking and TensorRT each
come with an extra (pyproject.toml). Commands import those libraries only when they run, so a missing one surfaces as
an ImportError there; :func:`missing_extra_error` turns it into a message naming the extra to install.
"""

from __future__ import annotations

import re

from cliplit.core.errors import CliplitError

#: top-level module -> the extra of pyproject.toml that installs it
MODULE_EXTRAS = {
    "torch": "export",
    "torchvision": "train",
    "onnx": "export",
    "open_clip": "train",
    "yaml": "train",
    "matplotlib": "bench",
    "imageio_ffmpeg": "bench",
    "tensorrt": "tensorrt",
    "tensorrt_lean": "tensorrt",
    "cuda": "tensorrt",
}
#: extra -> the extras it includes (pyproject.toml: train and bench pull in export)
INCLUDES = {"export": {"export"}, "train": {"train", "export"}, "bench": {"bench", "export"}, "tensorrt": {"tensorrt"}}


def missing_extra_error(error: ImportError, command: str, extra: str | None) -> CliplitError | None:
    """The message for ``command`` (which needs ``extra``, or None for the base install) failing to import an
    optional module; None when the missing module is not one of the extras' (a broken install: keep the traceback)."""
    name = error.name or _named(str(error))
    module_extra = MODULE_EXTRAS.get((name or "").split(".")[0])
    if module_extra is None:
        return None
    wanted = extra if extra is not None and module_extra in INCLUDES.get(extra, ()) else module_extra
    return CliplitError(
        f"{command} needs the '{wanted}' extra, which is not installed here (no module named {name!r}): "
        f"pip install 'cliplit[{wanted}]'"
    )


def _named(message: str) -> str | None:
    found = re.search(r"No module named '([\w.]+)'", message)
    return found.group(1) if found else None
