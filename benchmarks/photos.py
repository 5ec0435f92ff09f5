"""Fidelity on real photos: each backend's output against the official CLIP-LIT outputs, with its peak memory.

The per-size check frame is random noise, and noise misleads about approximations: ``--scale 0.25`` scored
42–45 dB on noise where real photos give 30–35 dB. So a run given ``--reference-dir`` (a folder with ``input/``
photos and the official ``reference/<stem>.png`` outputs, e.g. the released CLIP-LIT test photos) also runs every
backend on those photos at their full size and compares with the official outputs, as the tests do; the bar for
"full fidelity" is 50 dB (below half an 8-bit level RMS). The photos are up to 2048×1536, so this pass also gives
each backend's peak memory on large real inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cliplit.benchmarks.fidelity import quantised_reference
from cliplit.benchmarks.machine import peak_rss_mib, reset_peak_rss
from cliplit.core.contract import model_input_from_bgr
from cliplit.core.errors import CliplitError
from cliplit.core.images import is_image_path, read_image
from cliplit.core.metrics import psnr
from cliplit.runtime.backends.base import Backend

FULL_FIDELITY_DB = 50.0


@dataclass(frozen=True)
class ReferencePhoto:
    """One input photo and the official output for it."""

    name: str
    input: Path
    reference: Path


def reference_photos(folder: str | Path) -> list[ReferencePhoto]:
    """The photos of ``folder/input`` that have an official output ``folder/reference/<stem>.png``, by name.

    An input without its reference is an error, not a skip: a silently shorter evaluation would look better.
    """
    folder = Path(folder)
    inputs = sorted(p for p in (folder / "input").glob("*") if p.is_file() and is_image_path(p))
    if not inputs:
        raise CliplitError(f"--reference-dir {folder}: no photos in {folder / 'input'}")
    photos = []
    for path in inputs:
        official = folder / "reference" / f"{path.stem}.png"
        if not official.is_file():
            raise CliplitError(f"--reference-dir {folder}: {path.name} has no official output {official}")
        photos.append(ReferencePhoto(path.stem, path, official))
    return photos


def enhanced_bgr8(backend: Backend, image: np.ndarray) -> np.ndarray:
    """One H×W×3 BGR photo through ``backend`` as the runtime feeds it, back as 8-bit BGR rounded as the contract
    rounds (a uint8 backend's output as it is)."""
    output = backend.run(model_input_from_bgr(backend.io, image[None]))["enhanced"]
    return (output if output.dtype == np.uint8 else quantised_reference(output))[0]


def measure_photos(
    backend_name: str, build: Callable[[], Backend], photos: list[ReferencePhoto], log: Callable[[str], None]
) -> dict[str, Any]:
    """Load a backend, run every photo, and return its PSNR per photo, the range, the time and the peak memory."""
    result: dict[str, Any] = {"backend": backend_name, "status": "ok", "reason": None, "photos": []}
    rss_before = reset_peak_rss()
    try:
        with build() as backend:
            for photo in photos:
                image = read_image(photo.input)
                started = time.perf_counter()
                enhanced = enhanced_bgr8(backend, image)
                seconds = time.perf_counter() - started
                score = psnr(enhanced, read_image(photo.reference))
                height, width = image.shape[:2]
                result["photos"].append(
                    {"name": photo.name, "width": width, "height": height, "seconds": seconds}
                    | {"psnr_db": score if np.isfinite(score) else None}  # None: identical (JSON has no inf)
                )
            result["peak_rss_mib"] = peak_rss_mib(rss_before) if rss_before is not None else None
    except Exception as error:  # one backend's failure (out of memory, ...) is its result, not the run's
        text = str(error).strip().splitlines()
        result.update(status="error", reason=f"{type(error).__name__}: {text[0] if text else ''}"[:500])
        log(f"photos {backend_name}: error {error}")
        return result
    scores = [p["psnr_db"] if p["psnr_db"] is not None else float("inf") for p in result["photos"]]
    finite = [score for score in scores if np.isfinite(score)]
    result.update(min_psnr_db=min(finite, default=None), max_psnr_db=max(finite, default=None))
    result["rss_before_mib"] = rss_before
    result["full_fidelity"] = min(scores) >= FULL_FIDELITY_DB
    log(
        f"photos {backend_name}: {len(scores)} photos, {min(scores):.1f}–{max(scores):.1f} dB against the official "
        f"outputs, peak RSS {result['peak_rss_mib']} MiB"
    )
    return result
