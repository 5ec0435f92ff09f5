"""How far bf16 moves a distilled student's fast-path output from FP32, estimated where the CPU has no native bf16.

    python -m cliplit.benchmarks.bf16_estimate --photos ../shared/photos/photo_008.jpg ... [--model clip-lit-rt]

On CPUs with AVX512_BF16 or AMX, OpenVINO chooses bf16 by itself and the student's fast path runs its coefficients
network in the backend's precision (``cliplit.runtime.student_fast``). Where the CPU cannot run bf16, its fidelity can
still be estimated: the coefficients network runs under PyTorch's CPU autocast (convolutions on bf16 inputs and
weights with FP32 accumulation, as oneDNN's and OpenVINO's bf16 kernels compute them), the FP32 run beside it, and both
sets of coefficients go through the runtime's own full-resolution pass to 8-bit frames. Reported per photo: the PSNR
between the two outputs (the project's bar for a reduced precision is 50 dB, below half an 8-bit level RMS) and the
largest difference in levels. Use held-out photos, never the six evaluation photos. Needs the ``bench`` extra (torch).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cliplit.core.cli_settings import SettingsCli, from_args, setting
from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.runtime.student_fast import apply_coefficients

if TYPE_CHECKING:
    from cliplit.train.student import StudentNet

PROG = "python -m cliplit.benchmarks.bf16_estimate"


@dataclass(frozen=True)
class Estimate:
    """One photo's bf16 output against its FP32 output."""

    name: str
    psnr_db: float
    max_levels: int


def estimate(model: StudentNet, image: np.ndarray, name: str) -> Estimate:
    """``model`` (a ``StudentNet``) on the H×W×3 uint8 BGR ``image``: bf16 (autocast) against FP32."""
    import torch

    rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        fp32 = model.coefficients(rgb)[0].numpy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.coefficients(rgb)[0].float().numpy()
    reference, reduced = apply_coefficients(image, fp32), apply_coefficients(image, bf16)
    levels = int(np.abs(reference.astype(np.int16) - reduced.astype(np.int16)).max())
    return Estimate(name, psnr(reduced, reference), levels)


@dataclass(frozen=True)
class Bf16EstimateSettings:
    """The student and the photos to estimate on."""

    photos: tuple[Path, ...] = setting((), "held-out photos", required=True, metavar="PHOTO")
    model: str = setting("clip-lit-rt", "the student: a released name or a .pth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").splitlines()[0])
    SettingsCli(Bf16EstimateSettings).add_to(parser)
    settings = from_args(Bf16EstimateSettings, parser.parse_args(argv))
    return run_command(lambda: _run(settings), PROG, "bench")


def _run(settings: Bf16EstimateSettings) -> int:
    from cliplit.train.checkpoint import load_enhancer
    from cliplit.train.student import StudentNet

    model = load_enhancer(settings.model).model
    if not isinstance(model, StudentNet):
        raise CliplitError(f"{settings.model} is not a distilled student; only a student has a fast path")
    images = [(path, read_image(path)) for path in settings.photos]  # a missing photo is an error before any work
    print("| photo | size | bf16 vs FP32 | largest difference |\n| --- | --- | --- | --- |")
    scores = []
    for path, image in images:
        result = estimate(model, image, path.stem)
        scores.append(result.psnr_db)
        size = f"{image.shape[1]}×{image.shape[0]}"
        print(f"| {result.name} | {size} | {result.psnr_db:.2f} dB | {result.max_levels} levels |", flush=True)
    print(f"\nmean {np.mean(scores):.2f} dB, worst {min(scores):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
