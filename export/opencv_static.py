"""``export-engine --opencv-static HxW``: a float model with a fixed input size for OpenCV 4.x and OpenCV 5's classic
DNN engine, made from the verified dynamic export by the graph passes of :mod:`cliplit.export.opencv_compat`.

A module of its own because it runs the exporter, which itself applies one of those passes to every export: keeping
the passes apart from this driver leaves no import cycle between them.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from cliplit.core.atomic import atomic_output, check_writable
from cliplit.core.contract import check_frame_size
from cliplit.core.errors import CliplitError
from cliplit.export.onnx_export import DEFAULT_OPSET, export_onnx
from cliplit.export.opencv_compat import STATIC_BATCH, make_static
from cliplit.export.verify import LIGHT_MAP, Case, ExportReport, compare, onnx_runtime, require
from cliplit.train.checkpoint import EnhancerCheckpoint

_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def export_opencv_static(
    checkpoint: EnhancerCheckpoint,
    path: str | os.PathLike[str],
    height: int,
    width: int,
    *,
    opset: int | None = None,
    verify_images: list[np.ndarray] | None = None,
    overwrite: bool = True,
) -> ExportReport:
    """Write a float model with a fixed 1×3×``height``×``width`` input for OpenCV 4.x and OpenCV 5's classic engine.

    The dynamic export is made and verified against PyTorch first (``export_onnx``, on ``verify_images`` too); the
    static model is then checked against it in ONNX Runtime at its one size. Returns the ``ExportReport``.
    """
    _check_size(height, width)
    check_writable(path, overwrite)  # fail before the export's seconds of work, not after
    with tempfile.TemporaryDirectory(prefix="cliplit-opencv-") as folder:
        dynamic = Path(folder) / "dynamic.onnx"
        report = export_onnx(
            checkpoint, dynamic, io="float", opset=opset or DEFAULT_OPSET, verify_images=verify_images or []
        )
        model = onnx.load(str(dynamic))
        make_static(model, height, width)
        model.doc_string += f"; static input {STATIC_BATCH}x3x{height}x{width} for OpenCV DNN"
        with atomic_output(path, overwrite=overwrite) as tmp:
            onnx.save(model, str(tmp))
            image = np.random.default_rng(height * 7919 + width).random((STATIC_BATCH, 3, height, width), np.float32)
            case = Case(f"static {height}x{width} vs dynamic", image)
            checks = compare([case], onnx_runtime(tmp), onnx_runtime(dynamic), {"light_map": LIGHT_MAP})
            require(checks, "the static OpenCV model (against the dynamic export)")
    return report.moved(path, checks)


def parse_static_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (height first, as in the frame's shape) → (height, width), with a clear error otherwise."""
    match = _SIZE_PATTERN.match(text)
    if match is None:
        raise CliplitError(f"--opencv-static expects HEIGHTxWIDTH, e.g. 720x1280; got {text!r}")
    height, width = int(match[1]), int(match[2])
    _check_size(height, width)
    return height, width


def _check_size(height: int, width: int) -> None:
    try:
        check_frame_size(height, width)
    except ValueError as error:
        raise CliplitError(str(error)) from None
