"""The bf16 estimate of the student's fast path (cliplit.benchmarks.bf16_estimate) on held-out photos.

The figure docs/distill.md gives (59.7–60.3 dB on the nine held-out photos) comes from this module; here it runs on
crops of two of them and must clear the project's 50 dB bar for a reduced precision, and bf16 must actually change
the output (an estimate that compared FP32 with itself would say infinity).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SHARED

from cliplit.benchmarks.bf16_estimate import estimate, main
from cliplit.core.images import read_image
from cliplit.train.checkpoint import load_enhancer

HELD_OUT = [SHARED.parent / "photos" / name for name in ("photo_021.jpg", "photo_067.jpg")]


@pytest.mark.parametrize("path", HELD_OUT, ids=lambda path: path.stem)
def test_bf16_stays_within_the_bar_and_differs_from_fp32(path):
    if not path.is_file():
        pytest.fail(f"held-out photo {path} is missing: tests need ../shared/photos beside the checkout")
    crop = np.ascontiguousarray(read_image(path)[40:360, 60:460])
    result = estimate(load_enhancer("clip-lit-rt").model, crop, path.stem)
    assert math.isfinite(result.psnr_db) and 1 <= result.max_levels <= 3
    assert result.psnr_db >= 50.0, result


def test_only_a_student_is_estimated(released_weights, capsys):
    assert main(["--photos", str(HELD_OUT[0]), "--model", str(released_weights)]) == 2
    assert "is not a distilled student" in capsys.readouterr().err
