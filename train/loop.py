"""CLIP-LIT's training schedule: prompt initialisation, enhancer warm-up, then rounds of enhancer training and
prompt refinement, with resumable checkpoints, logs, per-round samples and the trained enhancer as its product.

A run is a sequence of (stage, round) phases that ends with ``--rounds`` or when the official code's epoch budget is
spent (``cliplit.train.schedule``). Each stage is a small class with one shape (``cliplit.train.stage``), the phase
runner drives it (``cliplit.train.phase``), and everything they share lives in the run state
(``cliplit.train.run_state``), which checkpoints and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliplit.core.errors import CliplitError
from cliplit.train.config import TrainConfig
from cliplit.train.enhancer_stages import Enhance, Warmup
from cliplit.train.logs import write_json
from cliplit.train.phase import run_phase, run_summary
from cliplit.train.prompt_stages import PromptInit, Refine
from cliplit.train.run_state import CHECKPOINT, RunState, open_run
from cliplit.train.schedule import epochs_left, phase_at
from cliplit.train.stage import Stage

STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in (PromptInit, Warmup, Enhance, Refine)}


@dataclass
class TrainOutcome:
    """Where a run stands after ``train`` returns."""

    run_dir: Path
    finished: bool
    step: int
    summary: dict[str, Any]


def train(config: TrainConfig, *, resume: bool = False) -> TrainOutcome:
    """Run (or resume) training as configured; returns when done or when ``max_steps`` is reached."""
    config.validate()
    if not resume and (Path(config.out) / CHECKPOINT).exists():
        raise CliplitError(
            f"{config.out} already holds a training run; pass --resume to continue it or pick another --out"
        )
    run = open_run(config, resume=resume)
    try:
        return _run_phases(run)
    finally:
        run.close()


def _run_phases(run: RunState) -> TrainOutcome:
    """The remaining phases, one after the other, until the plan, the epochs or ``--max-steps`` end."""
    p = run.progress
    while (phase := _next_phase(run)) is not None and not run.should_stop():
        name, round_index = phase
        if not run_phase(run, STAGES[name](run, round_index)):
            break
    finished = _next_phase(run) is None
    run.save_checkpoint()
    summary = run_summary(run, finished=finished)
    if run.ctx.is_main:
        write_json(run.run_dir / "summary.json", summary)
        if not finished:
            run.say(f"stopped after {p.step} iterations; continue with --resume --out {run.run_dir}")
    return TrainOutcome(run.run_dir, finished, p.step, summary)


def _next_phase(run: RunState) -> tuple[str, int] | None:
    """The phase to run now: the one under way, or the next if the plan has one and an epoch is left to start it."""
    p = run.progress
    if p.target == 0 and epochs_left(run.config, p) <= 0:
        return None
    return phase_at(run.config, p.phase)
