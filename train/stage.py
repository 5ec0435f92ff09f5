"""The shape every training stage has: prepare, then step (repeated), then finish.

The phase runner (``cliplit.train.phase``) owns the loop around a stage: the schedule position, timing, logs,
checkpoints and stopping. A stage owns what differs: its data, its optimisation step, the decisions taken after a
step (best snapshot, extensions, restarts) and what it writes when done. Stages act only on the shared
``RunState``, so a phase interrupted at any iteration resumes exactly from a checkpoint of that state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from cliplit.train.data import StepBatches
from cliplit.train.run_state import RunState


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
        """At the last iteration, add ``iterations`` while the running loss is above ``above`` (up to the cap)."""
        p = self.run.progress
        last = p.iteration == p.target and p.extensions < self.config.max_extensions
        if last and iterations > 0 and p.running_loss > above:
            p.target += iterations
            p.extensions += 1

    def improved(self) -> bool:
        """Whether the running loss is the phase's lowest so far (and record it as such)."""
        p = self.run.progress
        if p.running_loss >= p.best_loss:
            return False
        p.best_loss = p.running_loss
        return True
