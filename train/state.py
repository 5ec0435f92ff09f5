"""The resumable training state: where the schedule stands, and every random generator's state.

A checkpoint holds the models, their best snapshots, both optimisers, the gradient scaler, the schedule position
(stage, round, iteration, extensions, running-loss window) and the RNG states of torch, CUDA, NumPy and Python. Data
order and augmentation need no state (see ``cliplit.train.data``), so restoring this reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError

STATE_FORMAT = "cliplit-train-state"
STATE_VERSION = 1


@dataclass
class Progress:
    """Position in the schedule and the running statistics of the current phase."""

    phase: int = 0  # index into the plan of (stage, round) phases
    iteration: int = 0  # iterations done in this phase
    target: int = 0  # iterations this phase runs, extensions included; 0 until the phase starts
    extensions: int = 0
    restarts: int = 0  # warm-up re-initialisations
    attempt_start: int = 0  # warm-up: iteration at which the current attempt began
    step: int = 0  # iterations done in all phases
    window: list[float] = field(default_factory=list)  # recent losses (running loss)
    recent_losses: list[float] = field(default_factory=list)  # the last 30 losses (the official best-model test)
    best_loss: float = math.inf
    phase_seconds: float = 0.0
    phases: list[dict[str, Any]] = field(default_factory=list)  # one record per finished phase
    accuracy: float | None = None  # prompt accuracy on the un-augmented training images, after the last prompt phase
    # The official code's epochs (see cliplit.train.schedule): epochs started in all (the open one included), steps
    # done in the open one, and the phase iteration at which the official loop would break out of it.
    epochs: int = 0
    epoch_open: bool = False
    epoch_steps: int = 0
    epoch_end: int = 0
    recent_psnr: list[float] = field(default_factory=list)  # stage 2: the last 30 iterations' luma PSNR

    @property
    def running_loss(self) -> float:
        return sum(self.window) / len(self.window) if self.window else math.inf

    def start_phase(self, target: int) -> None:
        """Reset the per-phase counters for a phase of ``target`` iterations."""
        self.target = target
        self.iteration = self.extensions = self.restarts = self.attempt_start = 0
        self.window, self.recent_losses, self.recent_psnr = [], [], []
        self.best_loss, self.phase_seconds = math.inf, 0.0


def capture_rng() -> dict[str, Any]:
    """The state of every global random generator, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, progress: Progress, tensors: dict[str, Any], config: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a crash while saving leaves the previous one intact."""
    blob = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "config": config,
        "progress": asdict(progress),
        "rng": capture_rng(),
        **tensors,
    }
    with atomic_output(path) as tmp:
        torch.save(blob, tmp)


def load_state(path: Path) -> tuple[Progress, dict[str, Any]]:
    """Read a checkpoint; returns the progress and the rest of the blob (models, optimisers, RNG, config)."""
    if not path.is_file():
        raise CliplitError(f"cannot resume: {path} not found (was this run directory created by cliplit train?)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != STATE_FORMAT:
        raise CliplitError(f"{path} is not a cliplit training checkpoint")
    if blob.get("version", 0) > STATE_VERSION:
        raise CliplitError(f"{path} was written by a newer cliplit (state version {blob['version']})")
    progress = Progress(**blob.pop("progress"))
    return progress, blob
