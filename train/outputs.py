"""What a run writes for people and for later stages: per-round results, sample sheets, enhancer and prompt files.

Per-round results are the best enhancer's outputs on the backlit training images, written as 8-bit PNGs (as the
released code does) and read back by prompt refinement, so an interrupted and resumed run ranks exactly the same
pixels. Only the last two rounds' results are kept: refinement never looks further back.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplit.core.images import write_image
from cliplit.core.light_map import to_uint8
from cliplit.core.version import cliplit_version
from cliplit.train.checkpoint import save_enhancer
from cliplit.train.config import TrainConfig
from cliplit.train.data import load_rgb
from cliplit.train.network import LightMapNet, apply_light_map
from cliplit.train.prompts import PromptPair, save_prompts

RESULTS_KEPT = 2
CHUNK = 8  # images per enhancer pass while writing results


def results_dir(run_dir: Path, round_index: int) -> Path:
    return run_dir / "results" / f"round_{round_index:03d}"


def result_paths(run_dir: Path, round_index: int, count: int) -> list[Path]:
    """Where round ``round_index`` stores the result of backlit image i (i < count), aligned with the image list."""
    folder = results_dir(run_dir, round_index)
    return [folder / f"{i:06d}.png" for i in range(count)]


def tensor_to_bgr8(image: torch.Tensor) -> np.ndarray:
    """3 x H x W RGB in [0, 1] -> H x W x 3 uint8 BGR, rounded as the ONNX contract rounds (``to_uint8``)."""
    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy()
    return np.ascontiguousarray(to_uint8(rgb)[:, :, ::-1])


@torch.no_grad()
def write_results(
    enhancer: LightMapNet, backlit: Sequence[Path], run_dir: Path, round_index: int, *, size: int
) -> list[Path]:
    """Enhance every backlit image at ``size`` x ``size`` and save the outputs; older rounds beyond the last two go."""
    device = next(enhancer.parameters()).device
    paths = result_paths(run_dir, round_index, len(backlit))
    for start in range(0, len(backlit), CHUNK):
        images = torch.stack([load_rgb(path, size) for path in backlit[start : start + CHUNK]]).to(device)
        enhanced = apply_light_map(images, enhancer(images))
        for offset, image in enumerate(enhanced):
            write_image(paths[start + offset], tensor_to_bgr8(image), overwrite=True)
    for old in range(round_index - RESULTS_KEPT, -1, -1):
        shutil.rmtree(results_dir(run_dir, old), ignore_errors=True)
    return paths


def write_sample_sheet(inputs: Sequence[Path], outputs: Sequence[Path], path: Path, *, size: int) -> Path:
    """One row per sample: the backlit input beside this round's result."""
    rows = [
        np.hstack([tensor_to_bgr8(load_rgb(source, size)), tensor_to_bgr8(load_rgb(result, size))])
        for source, result in zip(inputs, outputs, strict=True)
    ]
    return write_image(path, np.vstack(rows), overwrite=True)


def enhancer_source(config: TrainConfig, round_index: int, step: int, init_sha256: str | None) -> dict[str, Any]:
    """The provenance an enhancer file records: what trained it, from which start, with which options."""
    return {
        "trained_by": f"cliplit train {cliplit_version()}",
        "round": round_index,
        "step": step,
        "init_enhancer": config.init_enhancer,
        "init_enhancer_sha256": init_sha256,
        "clip_model": config.clip_model,
        "clip_pretrained": config.clip_pretrained,
        "identity_model": config.identity_model,
        "identity_pretrained": config.identity_pretrained,
        "config": config.to_dict(),
    }


def save_enhancer_files(
    run_dir: Path,
    current: LightMapNet,
    best: LightMapNet | None,
    *,
    round_index: int,
    padding: str,
    source: dict[str, Any],
) -> None:
    """``enhancer_final.pth`` (the current iterate) and, given a best model, ``enhancer_best.pth`` and this round's
    ``enhancer_round_NNN.pth``; ``source`` is completed with the kind of each file."""
    save_enhancer(current, run_dir / "enhancer_final.pth", padding=padding, source={**source, "kind": "final"})
    if best is not None:
        best_source = {**source, "kind": "best"}
        save_enhancer(best, run_dir / "enhancer_best.pth", padding=padding, source=best_source)
        save_enhancer(best, run_dir / f"enhancer_round_{round_index:03d}.pth", padding=padding, source=best_source)


def save_prompt_files(run_dir: Path, current: PromptPair, best: PromptPair, source: dict[str, Any]) -> None:
    """``prompts_final.pt`` (the current prompts) and ``prompts_best.pt``, both readable by ``--init-prompts``."""
    save_prompts(current, run_dir / "prompts_final.pt", {**source, "kind": "final"})
    save_prompts(best, run_dir / "prompts_best.pt", {**source, "kind": "best"})
