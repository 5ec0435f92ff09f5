"""The ONNX I/O contract shared by the exporter, the runtime and C++ consumers.

Everything that both sides of an exported model must agree on lives here, so the exporter writes exactly what the
runtime reads: tensor names, layouts, the metadata keys and the numerical constants of the final division. This
module must stay importable without torch (the runtime imports it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.core.version import cliplit_version

IO_VARIANTS: tuple[str, ...] = ("float", "uint8")
#: Revision of each I/O variant's exported graph. A cliplit whose export changes a variant's graph bumps its number,
#: and the runtime's cache of exports (cliplit.runtime.models) names files by it, so an export cached by an
#: older version is made again rather than run with the old graph. uint8 2: no channel reorders (the network takes
#: the frame's BGR order).
GRAPH_REVISIONS: dict[str, int] = {"float": 1, "uint8": 2}

# The released model divides by L with no guard; where L == 0 that gives inf (clamped to 1) or NaN (0/0). We divide
# by max(L, LIGHT_MAP_EPS) instead. Any L below 1e-6 turns every x >= 1/255 into x/L > 3900, which clamps to 1 just
# as the official code does, so the only pixels that change are x == 0 with L == 0: 0 here, NaN officially.
LIGHT_MAP_EPS = 1e-6

# Reflect padding by one pixel needs at least two rows and columns; everything else (adaptive pooling to 6x6 bins,
# which PyTorch lets overlap on tiny inputs) works from one. Tests run the exported models at exactly this size.
MIN_SIDE = 2

# Pyramid pooling bins of the released network (PPM1).
PPM_BINS: tuple[int, ...] = (1, 2, 3, 6)


@dataclass(frozen=True)
class IoSpec:
    """Names and layouts of one I/O variant's tensors."""

    input_name: str
    input_layout: str
    input_dtype: str
    colour_order: str
    value_range: str
    output_names: tuple[str, ...]


# The ``float`` variant's outputs are a choice (``export-engine --outputs``): hosts such as VapourSynth's vs-mlrt take
# single-output models only. ``IO_SPECS`` lists every output a variant can have, in the order a model has them.
IO_SPECS: dict[str, IoSpec] = {
    "float": IoSpec(
        input_name="image",
        input_layout="NCHW",
        input_dtype="float32",
        colour_order="RGB",
        value_range="[0,1]",
        output_names=("enhanced", "light_map"),
    ),
    "uint8": IoSpec(
        input_name="frame",
        input_layout="NHWC",
        input_dtype="uint8",
        colour_order="BGR",
        value_range="[0,255]",
        output_names=("enhanced",),
    ),
}

#: the Triton model name ``cliplit serve`` and ``export-engine --triton-repo`` give a model by default
DEFAULT_MODEL_NAME = "clip_lit"
#: how long Triton holds a request to batch it with others (both the server and a model repository): 2 ms is small
#: beside one frame's inference
DEFAULT_QUEUE_DELAY_US = 2000
#: the largest batch Triton forms by default (the server's cap when --max-batch is derived from the budget, and an
#: ONNX model repository's max_batch_size)
DEFAULT_MAX_BATCH = 8

# metadata_props keys written into every exported model.
META_MODEL_NAME = "cliplit.model_name"
META_WEIGHTS_SHA256 = "cliplit.weights_sha256"
META_IO = "cliplit.io"
META_LAYOUT = "cliplit.layout"
META_COLOUR_ORDER = "cliplit.colour_order"
META_VALUE_RANGE = "cliplit.value_range"
META_OPSET = "cliplit.opset"
META_VERSION = "cliplit.version"
META_MIN_SIDE = "cliplit.min_side"
META_EPS = "cliplit.light_map_eps"
META_PADDING = "cliplit.padding_variant"
# Comma-separated output names in the model's order; models exported before this key have all their variant's outputs.
META_OUTPUTS = "cliplit.outputs"
# Only in a distilled student's export: its teacher's name and its measured fidelity (JSON). The runtime's ``auto``
# reads the first to pick the engine that runs students fastest.
META_TEACHER = "cliplit.teacher"
META_FIDELITY = "cliplit.fidelity"


class OutputsError(CliplitError, ValueError):
    """A choice of outputs the I/O variant does not offer."""


def metadata_for(
    io: str,
    *,
    model_name: str,
    weights_sha256: str,
    opset: int,
    version: str,
    padding: str,
    outputs: Sequence[str] | None = None,
) -> dict[str, str]:
    """Return the metadata_props that describe a model of I/O variant ``io`` with ``outputs`` (default: all)."""
    spec = io_spec(io, outputs)
    return {
        META_MODEL_NAME: model_name,
        META_WEIGHTS_SHA256: weights_sha256,
        META_IO: io,
        META_LAYOUT: spec.input_layout,
        META_COLOUR_ORDER: spec.colour_order,
        META_VALUE_RANGE: spec.value_range,
        META_OPSET: str(opset),
        META_VERSION: version,
        META_MIN_SIDE: str(MIN_SIDE),
        META_EPS: repr(LIGHT_MAP_EPS),
        META_PADDING: padding,
        META_OUTPUTS: ",".join(spec.output_names),
    }


def model_metadata(
    io: str,
    outputs: Sequence[str] | None,
    *,
    model_name: str,
    weights_sha256: str,
    padding: str,
    source: Mapping[str, object],
    opset: int,
) -> dict[str, str]:
    """The metadata_props of a model exported from a checkpoint whose provenance is ``source``: the contract's keys
    plus, for a distilled student, its teacher and measured fidelity. The exporter and the runtime's torch-free
    builder (:mod:`cliplit.core.graphs`) both write exactly this."""
    meta = metadata_for(
        io,
        model_name=model_name,
        weights_sha256=weights_sha256,
        opset=opset,
        version=cliplit_version(),
        padding=padding,
        outputs=outputs,
    )
    if "distilled_from" in source:
        meta[META_TEACHER] = str(source["distilled_from"])
        fidelity = source.get("fidelity") or source.get("val_psnr_vs_teacher", {})
        meta[META_FIDELITY] = json.dumps(fidelity, sort_keys=True)
    return meta


def model_doc_string(model_name: str, part: str = "") -> str:
    """The doc_string of an exported model (``part``: which split part, for tiled inference)."""
    what = f", {part} of the split for tiled inference" if part else ""
    return f"CLIP-LIT enhancer ({model_name}){what}, exported by cliplit {cliplit_version()}"


def io_spec(io: str, outputs: Sequence[str] | None = None) -> IoSpec:
    """The spec of I/O variant ``io`` with ``outputs`` (default: all the variant's outputs), with a clear error for
    unknown names. The chosen outputs keep the contract's order, whatever order they are given in."""
    try:
        spec = IO_SPECS[io]
    except KeyError:
        raise ValueError(f"unknown I/O variant {io!r}; expected one of {', '.join(IO_VARIANTS)}") from None
    if outputs is None:
        return spec
    unknown = sorted(set(outputs) - set(spec.output_names))
    if unknown or not outputs:
        offered = ", ".join(spec.output_names)
        raise OutputsError(
            f"a {io} model can output {offered} (one or more, comma-separated); got {','.join(outputs) or 'none'}"
        )
    return replace(spec, output_names=tuple(name for name in spec.output_names if name in outputs))


def outputs_from_metadata(io: str, metadata: Mapping[str, str]) -> tuple[str, ...]:
    """The outputs a model's ``metadata_props`` record (all of variant ``io``'s when the key predates the choice)."""
    recorded = metadata.get(META_OUTPUTS)
    if recorded is None:
        return io_spec(io).output_names
    return io_spec(io, recorded.split(",")).output_names


class FrameSizeError(CliplitError, ValueError):
    """A frame is smaller than the network's minimum."""


def check_frame_size(height: int, width: int) -> None:
    """Reject frames the network cannot process, naming the minimum."""
    if height < MIN_SIDE or width < MIN_SIDE:
        raise FrameSizeError(
            f"frame of {width}x{height} pixels is too small: CLIP-LIT needs at least {MIN_SIDE}x{MIN_SIDE} "
            "(its convolutions use reflect padding)"
        )


def random_model_input(io: str, batch: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise over the full value range in variant ``io``'s input layout (never zeros, which flatter speed)."""
    if io_spec(io).input_dtype == "float32":
        return rng.random((batch, 3, height, width), dtype=np.float32)
    return rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


def model_input_from_bgr(io: str, frames_bgr: np.ndarray) -> np.ndarray:
    """N×H×W×3 uint8 BGR frames (what OpenCV and decoders give) in variant ``io``'s input layout.

    ``uint8`` takes them as they are; ``float`` wants N×3×H×W RGB in [0, 1], computed as uint8 / 255 in float32 like
    the official inference.
    """
    if io_spec(io).input_dtype != "float32":
        return frames_bgr
    rgb = np.ascontiguousarray(frames_bgr[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    rgb /= np.float32(255.0)
    return rgb


def model_input_from_rgb(io: str, rgb: np.ndarray) -> np.ndarray:
    """An RGB uint8 H×W×3 image as a batch of one in variant ``io``'s input layout."""
    return np.ascontiguousarray(model_input_from_bgr(io, rgb[None, :, :, ::-1]))
