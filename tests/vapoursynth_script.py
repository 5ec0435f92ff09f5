"""Run a cliplit ONNX model through vs-mlrt inside the VapourSynth environment (see tests/vapoursynth_env.py).

This file runs under that environment's Python (≥ 3.12, with only vapoursynth, the vs-mlrt plugins and numpy), never
under the test suite's: it must not import cliplit or pytest. It follows docs/vapoursynth.md's pipeline — an 8-bit
RGB clip, converted to RGBS, through ``core.ort.Model`` or ``core.ov.Model``, converted back to RGB24 — and saves the
8-bit result of each requested configuration as ``OUT_DIR/<name>.npy``.

Usage: python vapoursynth_script.py MODEL.onnx INPUT.npy OUT_DIR NAME=PLUGIN[:SETTING] ...
where INPUT.npy is an H×W×3 uint8 RGB image and SETTING is ``fp32`` (OpenVINO's FP32 hint), ``fp16`` (the plugins'
``fp16=True``) or ``tile`` (``tilesize`` of half the frame with 16 pixels of overlap). Prints one line per
configuration with the wall time of its frame.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import vapoursynth as vs

core = vs.core


def rgb24_clip(rgb: np.ndarray) -> vs.VideoNode:
    """A one-frame RGB24 clip holding ``rgb`` (H×W×3 uint8), as a source filter would deliver it."""
    height, width = rgb.shape[:2]
    blank = core.std.BlankClip(format=vs.RGB24, width=width, height=height, length=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        frame = f.copy()
        for plane in range(3):
            np.asarray(frame[plane])[:] = rgb[:, :, plane]
        return frame

    return core.std.ModifyFrame(blank, blank, fill)


def enhance(clip: vs.VideoNode, model: str, plugin: str, setting: str) -> vs.VideoNode:
    """The documented pipeline: RGBS in (exact: x / 255), the model, then back to the source's format."""
    rgbs = core.resize.Point(clip, format=vs.RGBS)
    options: dict[str, object] = {"network_path": model}
    if setting == "fp16":
        options["fp16"] = True
    elif setting == "tile":
        options["tilesize"] = [clip.width // 2, clip.height // 2]
        options["overlap"] = [16, 16]
    if plugin == "ort":
        out = core.ort.Model(rgbs, verbosity=0, **options)  # 0: ONNX Runtime's fatal errors only
    else:
        if setting == "fp32":
            options["config"] = lambda: {"INFERENCE_PRECISION_HINT": "f32"}
        out = core.ov.Model(rgbs, device="CPU", **options)
    return core.resize.Point(out, format=clip.format.id)


def to_array(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[plane]) for plane in range(3)], axis=-1)


def main(argv: list[str]) -> int:
    model, image, out_dir, *configs = argv
    rgb = np.load(image)
    source = rgb24_clip(rgb)
    for config in configs:
        name, _, spec = config.partition("=")
        plugin, _, setting = spec.partition(":")
        start = time.perf_counter()
        frame = enhance(source, model, plugin, setting).get_frame(0)
        seconds = time.perf_counter() - start
        np.save(Path(out_dir) / f"{name}.npy", to_array(frame))
        print(f"{name}: {plugin} {setting or 'default'} {rgb.shape[1]}x{rgb.shape[0]} in {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
