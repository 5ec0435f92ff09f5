"""The run's plan: which (stage, round) phases it has, in order.

Stage 1 runs unless prompts are given, stage 2 only from a random enhancer, then rounds of stages 3 and 4.
"""

from __future__ import annotations

from cliplit.train.config import TrainConfig

PROMPT_INIT, WARMUP, ENHANCE, REFINE = "prompt_init", "warmup", "enhance", "refine"


def plan_phases(config: TrainConfig) -> list[tuple[str, int]]:
    """The (stage, round) phases of a run: stage 1 unless prompts are given, stage 2 only from a random enhancer."""
    phases = []
    if config.init_prompts is None and config.prompt_init_iters > 0:
        phases.append((PROMPT_INIT, 0))
    if config.init_enhancer == "none" and config.warmup_iters > 0:
        phases.append((WARMUP, 0))
    for index in range(config.rounds):
        phases += [(ENHANCE, index), (REFINE, index)]
    return phases
