"""The shape every training stage has: prepare, then step (repeated), then finish.

The phase runner (``cliplit.train.phase``) owns the loop around a stage: the schedule position, timing, logs,
checkpoints and stopping. A stage owns what differs: its data, its optimisation step, the decisions taken after a
step (best snapshot, extensions, restarts) and what it writes when done. Stages act only on the shared
``RunState``, so a phase interrupted at any iteration resumes exactly from a checkpoint of that state.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from cliplit.train.config import TrainConfig
from cliplit.train.data import StepBatches
from cliplit.train.run_state import RunState
from cliplit.train.state import Progress

# The official best-model test (train.py): every 20 iterations, the sum of a 30-slot loss buffer (zeros at each
# round's start) divided by 30.
OFFICIAL_CHECK_EVERY = 20
OFFICIAL_WINDOW = 30


class Stage(ABC):
    """One (stage, round) phase of a run."""

    name: ClassVar[str]

    def __init__(self, run: RunState, round_index: int) -> None:
        self.run, self.config, self.round_index = run, run.config, round_index

    @property
    def label(self) -> str:
        """How progress bars and messages name the phase."""
        return self.name

    @abstractmethod
    def iterations(self) -> int:
        """Iterations of the phase before any extension."""

    @abstractmethod
    def prepare(self) -> StepBatches:
        """Set the phase up (again, after a resume) and return its batches, indexed by the phase's iteration."""

    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step; its metrics, "loss" among them."""

    @abstractmethod
    def after_step(self, metrics: dict[str, float]) -> None:
        """Decisions once the step is counted in ``run.progress``: best snapshot, extensions, restarts."""

    @abstractmethod
    def finish(self, record: dict[str, Any]) -> None:
        """Write what the phase produced; add its own statistics to ``record``."""

    def batch_options(self) -> dict[str, Any]:
        """What makes this phase's batches its own: the seed, the stream (stage and round) and this process's slice."""
        ctx, stream = self.run.ctx, f"{self.name}/{self.round_index}"
        return {"seed": self.config.seed, "stream": stream, "rank": ctx.rank, "world": ctx.world}

    def extend(self, iterations: int, above: float) -> None:
        """Add ``iterations`` to the phase when ``extension_due``; the official loop continues in the same epoch,
        so the epoch's end moves too."""
        p = self.run.progress
        if iterations > 0 and extension_due(p, self.config, above):
            p.target += iterations
            p.epoch_end += iterations
            p.extensions += 1

    def improved(self) -> bool:
        """Whether the running loss is the phase's lowest so far (and record it as such)."""
        return self.record_best(self.run.progress.running_loss)

    def improved_officially(self) -> bool:
        """Whether ``official_best_score`` has a score now and it is the phase's lowest so far (recorded if so)."""
        score = official_best_score(self.run.progress)
        return score is not None and self.record_best(score)

    def best_loss(self) -> float | None:
        """The best score the phase recorded; None if it never tested one (a phase shorter than the test's period)."""
        best = self.run.progress.best_loss
        return best if math.isfinite(best) else None

    def record_best(self, score: float) -> bool:
        p = self.run.progress
        if score >= p.best_loss:
            return False
        p.best_loss = score
        return True


def extension_due(progress: Progress, config: TrainConfig, above: float) -> bool:
    """At a phase's last iteration, whether the loss is above ``above``: that iteration's loss, as the official
    train.py tests it, or the running loss (``--extension-test running-mean``); never after ``--max-extensions``."""
    p = progress
    tested = p.window[-1] if config.extension_test == "last-loss" else p.running_loss
    return p.iteration == p.target and p.extensions < config.max_extensions and tested > above


def official_best_score(progress: Progress) -> float | None:
    """The official best-model score: every 20 iterations, the sum of the last 30 losses / 30 (fewer losses early
    in the phase count as zeros: the check at iteration 20 sees 2/3 of their mean); None between checks."""
    if progress.iteration % OFFICIAL_CHECK_EVERY:
        return None
    return sum(progress.recent_losses[-OFFICIAL_WINDOW:]) / OFFICIAL_WINDOW
