"""Export the enhancer to ONNX with dynamic batch, height and width, in either I/O variant of the contract.

The graph holds all pre- and post-processing (colour order, scaling, the guarded division, clamping and, for the
``uint8`` variant, rounding as the reference does), so a C++ pipeline feeds decoder frames in and gets frames out.
Every export is checked (onnx.checker, shape inference) and verified against PyTorch in ONNX Runtime before it is
renamed into place (:mod:`cliplit.export.verify`); a model that drifts more than its tolerances is never written.
"""

from __future__ import annotations

import io as io_module
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from cliplit.core.atomic import atomic_output
from cliplit.core.contract import IO_VARIANTS, io_spec, model_doc_string, model_metadata, random_model_input
from cliplit.core.errors import CliplitError
from cliplit.export.opencv_compat import expand_single_pixel_resizes
from cliplit.export.verify import (
    Check,
    ExportReport,
    compare,
    image_cases,
    onnx_runtime,
    output_tolerances,
    random_cases,
    require,
)
from cliplit.train.checkpoint import EnhancerCheckpoint
from cliplit.train.network import LightMapNet, apply_light_map
from cliplit.train.student import StudentNet

DEFAULT_OPSET = 17


class FloatIO(nn.Module):
    """``image`` f32 N×3×H×W RGB [0,1] → ``enhanced`` (same layout) and/or ``light_map`` N×1×H×W, as chosen."""

    def __init__(self, enhancer: nn.Module, outputs: Sequence[str] | None = None) -> None:  # LightMapNet or a student
        super().__init__()
        self.enhancer = enhancer
        self.outputs = io_spec("float", outputs).output_names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        light_map = self.enhancer(image)
        named = {"light_map": light_map}
        if "enhanced" in self.outputs:
            named["enhanced"] = apply_light_map(image, light_map)
        return tuple(named[name] for name in self.outputs)


class Uint8IO(nn.Module):
    """``frame`` u8 N×H×W×3 BGR → ``enhanced`` u8 N×H×W×3 BGR, rounded as floor(y·255 + 0.5).

    The frame is cast to float before anything else touches it and the result is cast back to uint8 last, so the
    only uint8 tensors in the graph are its input and output: TensorRT accepts UINT8 only as a network input or
    output (onnx-tensorrt docs/operators.md: "UINT8 is only supported as network input or output tensor types"), and
    ``cliplit.export.trt_compat`` checks exactly that.

    The network runs on the frame's own B, G, R order (``with_bgr_input``: its first convolution's channels are
    swapped instead), and the light map's division is per channel, so the graph never reorders channels: each
    reorder was a full-resolution Gather, a fifth of the student's time in ONNX Runtime at 720p.
    """

    def __init__(self, enhancer: LightMapNet | StudentNet) -> None:
        super().__init__()
        self.enhancer = enhancer.with_bgr_input()
        self.outputs = io_spec("uint8").output_names

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        bgr = frame.to(torch.float32).permute(0, 3, 1, 2) / 255.0
        enhanced = apply_light_map(bgr, self.enhancer(bgr))
        scaled = torch.clamp(torch.floor(enhanced * 255.0 + 0.5), 0.0, 255.0)
        return scaled.permute(0, 2, 3, 1).to(torch.uint8)


def onnx_graph(
    model: LightMapNet | StudentNet, io: str, outputs: Sequence[str] | None = None, opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """The exported graph of ``model`` in I/O variant ``io`` with ``outputs``, before metadata and verification: what
    every export writes and what the runtime's graph templates (:mod:`cliplit.export.templates`) are made from."""
    spec = io_spec(io, outputs)
    wrapper = io_wrapper(model, io, outputs)
    example = random_model_input(io, 1, 67, 93, np.random.default_rng(0))
    dims = {0: "batch", 1: "height", 2: "width"} if io == "uint8" else {0: "batch", 2: "height", 3: "width"}
    buffer = io_module.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and deprecation chatter
        torch.onnx.export(
            wrapper,
            (torch.from_numpy(example),),
            buffer,
            dynamo=False,
            input_names=[spec.input_name],
            output_names=list(spec.output_names),
            dynamic_axes={name: dims for name in (spec.input_name, *spec.output_names)},
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    expand_single_pixel_resizes(proto)  # OpenCV 5.0 misreads Resize from 1×1 maps; see opencv_compat
    return proto


def io_wrapper(model: LightMapNet | StudentNet, io: str, outputs: Sequence[str] | None = None) -> FloatIO | Uint8IO:
    """``model`` wrapped in the I/O of variant ``io``."""
    return FloatIO(model, outputs) if io == "float" else Uint8IO(model)


def export_onnx(
    checkpoint: EnhancerCheckpoint,
    path: str | os.PathLike[str],
    *,
    io: str = "float",
    opset: int = DEFAULT_OPSET,
    verify_images: list[np.ndarray] | None = None,
    overwrite: bool = True,
    outputs: Sequence[str] | None = None,
) -> ExportReport:
    """Export ``checkpoint`` to ``path`` and verify it; raises ``CliplitError`` if verification fails.

    ``verify_images`` are extra RGB uint8 H×W×3 images (real photos) checked besides random inputs. ``outputs`` picks
    the model's outputs (default: all of the variant's); ``("enhanced",)`` makes the single-output model that hosts
    such as vs-mlrt require.
    """
    if io not in IO_VARIANTS:
        raise CliplitError(f"unknown --io {io!r}; expected one of {', '.join(IO_VARIANTS)}")
    spec = io_spec(io, outputs)
    model = checkpoint.model.eval()
    with atomic_output(path, overwrite=overwrite) as tmp:
        proto = onnx_graph(model, io, outputs, opset)
        proto.doc_string = model_doc_string(checkpoint.name)
        meta = model_metadata(
            io,
            spec.output_names,
            model_name=checkpoint.name,
            weights_sha256=checkpoint.sha256,
            padding=model.padding,
            source=checkpoint.source,
            opset=opset,
        )
        onnx.helper.set_model_props(proto, meta)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        checks = verify_against_torch(tmp, io_wrapper(model, io, outputs), io, verify_images or [])
    chosen = None if outputs is None else spec.output_names
    return ExportReport(path=Path(path), io=io, opset=opset, checks=checks, outputs=chosen)


def verify_against_torch(
    onnx_path: str | os.PathLike[str], wrapper: FloatIO | Uint8IO, io: str, images: list[np.ndarray]
) -> tuple[Check, ...]:
    """ONNX Runtime against PyTorch on the seeded random cases and on ``images``; raise on drift.

    Every output the model has is compared within its tolerance (:func:`cliplit.export.verify.output_tolerances`).
    """

    def pytorch(array: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            result = wrapper(torch.from_numpy(array))
        result = (result,) if isinstance(result, torch.Tensor) else result
        return {name: tensor.numpy() for name, tensor in zip(wrapper.outputs, result, strict=True)}

    cases = [*random_cases(io), *image_cases(io, images)]
    return require(compare(cases, onnx_runtime(onnx_path), pytorch, output_tolerances(io)), "ONNX export")
