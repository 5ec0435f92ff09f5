"""Export the network split at its pyramid pooling into two ONNX graphs, for exact tiled inference with bounded memory.

Everything before the pyramid pooling (PPM) is convolutional, and so is everything after it once the PPM's pooled
means are known; only the pooling itself looks at the whole frame. The runtime (:mod:`cliplit.runtime.tiling`)
therefore runs the **head** (image → PPM input features) tile by tile to sum the features over the frame's pooling
bins, then the head again and the **tail** (features + the frame's pooled means + the tile's position → light map)
tile by tile. The tail does the rest of the PPM itself: the 1×1 convolution and PReLU of each pooled level (tiny),
the bilinear upsampling (``align_corners=True``) of exactly the rows and columns the tile covers in the full frame,
written as two small interpolation matrices built from ``origin``, the 3×3 fuse convolution and the rest of the
network. Names and metadata: :mod:`cliplit.core.split_contract`.

The graphs become the split templates (:mod:`cliplit.export.templates`) from which the runtime builds any teacher's
split without torch; tests check that tiled inference with them reproduces the full model.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from cliplit.core.contract import PPM_BINS, random_model_input
from cliplit.core.split_contract import FEATURES, HEAD_INPUT, LIGHT_MAP, ORIGIN, TAIL_INPUTS
from cliplit.export.onnx_export import DEFAULT_OPSET
from cliplit.train.network import LightMapNet, SplitHead, SplitTail


def receptive_radius(module: nn.Module) -> int:
    """How far (in pixels) a chain of padded convolutions looks beyond an output pixel: the halo a tile needs.

    The parts are chains (residual blocks add their input back, which widens nothing), so the radius is the sum of
    every convolution's; the 1×1 convolutions of the pooled levels add nothing.
    """
    radius = 0
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            radius += max((k - 1) // 2 * d for k, d in zip(layer.kernel_size, layer.dilation, strict=True))
    return radius


def split_graphs(
    model: LightMapNet, opset: int = DEFAULT_OPSET
) -> tuple[onnx.ModelProto, onnx.ModelProto, tuple[int, int]]:
    """The head and tail graphs of ``model`` (no metadata) and their halos: what the split templates of
    :mod:`cliplit.export.templates` are made from."""
    head, tail = model.eval().split()
    halos = (receptive_radius(head), receptive_radius(tail))
    return _export_part("head", head, opset), _export_part("tail", tail, opset), halos


def _export_part(part: str, module: SplitHead | SplitTail, opset: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    spatial = {0: "batch", 2: "height", 3: "width"}
    if part == "head":
        example: tuple[torch.Tensor, ...] = (torch.from_numpy(random_model_input("float", 1, 37, 41, rng)),)
        names, outputs = [HEAD_INPUT], [FEATURES]
        dynamic_axes = {HEAD_INPUT: spatial, FEATURES: spatial}
    else:
        channels = module.ppm.fuse[0].out_channels
        features = torch.from_numpy(rng.random((1, channels, 37, 41), dtype=np.float32))
        pooled = [torch.from_numpy(rng.random((1, channels, b, b), dtype=np.float32)) for b in PPM_BINS]
        example = (features, *pooled, torch.tensor([3, 5, 67, 93], dtype=torch.int64))
        names, outputs = list(TAIL_INPUTS), [LIGHT_MAP]
        dynamic_axes = {name: {0: "batch"} for name in TAIL_INPUTS if name not in (FEATURES, ORIGIN)}
        dynamic_axes |= {FEATURES: spatial, LIGHT_MAP: spatial}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and deprecation chatter
        torch.onnx.export(
            module,
            example,
            buffer,
            dynamo=False,
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())
