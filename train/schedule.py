"""The run's plan: its (stage, round) phases, and how long it runs, counted in epochs as the official code counts.

Phases: stage 1 unless prompts are given, stage 2 only from a random enhancer, then rounds of stages 3 and 4 until
``--rounds`` or the epoch budget ends. The official train.py (ZhexinLiang/CLIP-LIT) runs ``for epoch in
range(num_epochs)``; each epoch either passes over one stage's loader (breaking when the stage's iterations are
done) or, once after stage 1, after stage 2 and after each round's stage 4, only resets the round's counters.
So a stage of I iterations over a loader of B batches takes ceil(I / B) epochs, each reset one more, and the run
ends wherever the epochs run out, possibly inside a stage. With its defaults (2,000 epochs, BAID's 380 backlit and
DIV2K's 384 well-lit images, batches of 8 and 16, released initial prompts and enhancer) that is 23 rounds of
2,100 + 1,000 iterations: 71,300 iterations.

The loaders, as the official ones: stages 2 and 3 over the backlit images; stage 1 over both folders, the smaller
one repeated up to the larger (2 x max rows); stage 4 over max(backlit, well-lit) rows, the backlit images repeated
as needed and each paired with one well-lit image.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliplit.train.config import TrainConfig
from cliplit.train.data import epoch_length
from cliplit.train.state import Progress

PROMPT_INIT, WARMUP, ENHANCE, REFINE = "prompt_init", "warmup", "enhance", "refine"
# Stages after which the official loop spends one epoch resetting its counters.
RESETS_AFTER = frozenset({PROMPT_INIT, WARMUP, REFINE})


def phase_at(config: TrainConfig, index: int) -> tuple[str, int] | None:
    """The ``index``-th (stage, round) phase of the plan; None past its end (only with ``--rounds``)."""
    prefix = []
    if config.init_prompts is None and config.prompt_init_iters > 0:
        prefix.append((PROMPT_INIT, 0))
    if config.init_enhancer == "none" and config.warmup_iters > 0:
        prefix.append((WARMUP, 0))
    if index < len(prefix):
        return prefix[index]
    round_index, second = divmod(index - len(prefix), 2)
    if config.rounds is not None and round_index >= config.rounds:
        return None
    return (REFINE if second else ENHANCE, round_index)


def needs_identity(config: TrainConfig) -> bool:
    """Whether any phase trains the enhancer (and so needs the identity model)."""
    return any(stage in (WARMUP, ENHANCE) for stage, _ in (phase_at(config, i) for i in range(3)) if stage)


def stage_rows(stage: str, backlit: int, well_lit: int) -> int:
    """Rows of a stage's loader, as the official loaders have them (see the module docstring)."""
    if stage == PROMPT_INIT:
        return 2 * max(backlit, well_lit)
    if stage == REFINE:
        return max(backlit, well_lit)
    return backlit


def base_iterations(config: TrainConfig, stage: str) -> int:
    """Iterations of a stage before extensions (and, for stage 2, re-initialisations)."""
    return {
        PROMPT_INIT: config.prompt_init_iters,
        WARMUP: config.warmup_iters,
        ENHANCE: config.enhance_iters,
        REFINE: config.refine_iters,
    }[stage]


def steps_per_epoch(config: TrainConfig, stage: str, backlit: int, well_lit: int, world: int) -> int:
    """Batches in one epoch of the stage's loader."""
    batch = config.batch_size if stage in (WARMUP, ENHANCE) else config.prompt_batch_size
    return epoch_length(stage_rows(stage, backlit, well_lit), batch, world)


def epochs_left(config: TrainConfig, progress: Progress) -> float:
    """Epochs the budget still allows (infinite without ``--epochs``)."""
    return float("inf") if config.epochs is None else config.epochs - progress.epochs


def open_epoch_if_needed(config: TrainConfig, progress: Progress, steps: int) -> bool:
    """Before a step: start a new epoch when none is open, the open one is used up, or the official loop would have
    broken out of it (``epoch_end``); False when the budget allows no new epoch (the phase ends there)."""
    p = progress
    if p.epoch_open and p.epoch_steps < steps and p.iteration < p.epoch_end:
        return True
    if epochs_left(config, p) <= 0:
        return False
    p.epochs += 1
    p.epoch_open, p.epoch_steps, p.epoch_end = True, 0, p.target
    return True


def close_phase(config: TrainConfig, progress: Progress, stage: str) -> None:
    """After a phase: its epoch is over, and the official loop's reset epoch follows stages 1, 2 and 4."""
    progress.epoch_open = False
    if stage in RESETS_AFTER:
        progress.epochs = min(progress.epochs + 1, config.epochs or progress.epochs + 1)


@dataclass(frozen=True)
class PlannedPhase:
    stage: str
    round: int
    iterations: int


def plan(config: TrainConfig, backlit: int, well_lit: int, world: int = 1) -> list[PlannedPhase]:
    """The phases a run will have and their iterations, if no stage is extended or re-initialised: what the epoch
    budget (or ``--rounds``) allows for these folder sizes. Without ``--epochs`` ``--rounds`` must be set."""
    phases, epochs, index = [], 0, 0
    budget = config.epochs if config.epochs is not None else float("inf")
    while epochs < budget and (phase := phase_at(config, index)) is not None:
        stage, round_index = phase
        steps = steps_per_epoch(config, stage, backlit, well_lit, world)
        iterations = min(base_iterations(config, stage), (budget - epochs) * steps)
        epochs += -(-iterations // steps) + (stage in RESETS_AFTER)
        phases.append(PlannedPhase(stage, round_index, int(iterations)))
        index += 1
    return phases
