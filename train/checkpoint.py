"""Enhancement-network checkpoints as PyTorch networks: build one from a checkpoint, write cliplit's format.

Reading lives in :mod:`cliplit.core.checkpoint` (torch-free, never running pickle code): this module turns what it
reads into a ``LightMapNet`` or ``StudentNet`` and writes cliplit checkpoints that it reads back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cliplit.core.atomic import atomic_output
from cliplit.core.checkpoint import FORMAT, FORMAT_VERSION, STUDENT, TEACHER, CheckpointError, read_checkpoint
from cliplit.train.network import PADDINGS, LightMapNet
from cliplit.train.student import StudentConfig, StudentNet

__all__ = ["CheckpointError", "EnhancerCheckpoint", "load_enhancer", "save_enhancer"]


@dataclass
class EnhancerCheckpoint:
    """A loaded enhancer with its provenance."""

    model: LightMapNet | StudentNet
    name: str
    sha256: str
    source: dict[str, Any] = field(default_factory=dict)


def load_enhancer(
    weights: str | os.PathLike[str] = "clip-lit", *, padding: str | None = None, download: bool = True
) -> EnhancerCheckpoint:
    """Build the enhancer from a released name, a released ``.pth`` or a cliplit checkpoint, in eval mode.

    ``padding`` overrides the padding variant of the CLIP-LIT network (students have none); by default released
    weights run as the official test code does ("test") and cliplit checkpoints in the variant they recorded.
    """
    data = read_checkpoint(weights, padding=padding, download=download)
    if data.architecture == TEACHER:
        model: LightMapNet | StudentNet = LightMapNet(data.padding)
    else:
        try:
            model = StudentNet(StudentConfig.from_dict(data.config))
        except ValueError as error:
            raise CheckpointError(f"{data.name}: {error}") from error
    state = {key: torch.from_numpy(value) for key, value in data.state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{data.name} does not hold CLIP-LIT enhancer weights (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    model.eval()
    return EnhancerCheckpoint(model=model, name=data.name, sha256=data.sha256, source=data.source)


def save_enhancer(
    model: LightMapNet | StudentNet,
    path: str | os.PathLike[str],
    *,
    padding: str = "test",
    source: dict[str, Any] | None = None,
) -> Path:
    """Write a cliplit checkpoint atomically (temporary file, then rename).

    ``padding`` is the padding variant to run the weights with; CLIP-LIT trains with zero outer padding and runs with
    reflect padding, so trained weights are saved as "test" unless asked otherwise. A ``StudentNet`` has no padding
    variant; its architecture and widths are recorded instead, so ``load_enhancer`` rebuilds the same network.
    """
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding variant {padding!r}; expected one of {PADDINGS}")
    path = Path(path)
    is_student = isinstance(model, StudentNet)
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": STUDENT if is_student else TEACHER,
        "architecture_config": model.config.to_dict() if is_student else {},
        "padding": padding,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "source": source or {},
    }
    with atomic_output(path) as tmp:
        torch.save(blob, tmp)
    return path
