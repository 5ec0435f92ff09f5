"""The official schedule, counted in epochs as the official train.py counts them, and the loop's decision rules
(extensions, the best enhancer, which prompts and which enhancer stage 3 uses), each against numbers worked out from
the official code by hand (the arithmetic is in the comments)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from cliplit.train.config import from_mapping
from cliplit.train.enhancer_stages import Enhance
from cliplit.train.schedule import ENHANCE, PROMPT_INIT, REFINE, WARMUP, phase_at, plan
from cliplit.train.stage import extension_due, official_best_score
from cliplit.train.state import Progress

BAID, DIV2K = 380, 384  # the official training folders: 380 backlit, 384 well-lit images


def test_paper_schedule_with_the_released_prompts_is_23_rounds_and_71300_iterations() -> None:
    # Stage 3: ceil(380 / 8) = 48 batches an epoch, 2,100 iterations = 44 epochs; stage 4: ceil(384 / 16) = 24
    # batches, 1,000 iterations = 42 epochs; one reset epoch per round: 87. 2,000 epochs = 22 rounds (1,914) and
    # 86 more: round 23's stages 3 and 4 exactly, its reset left out.
    phases = plan(from_mapping({"init_prompts": "released.pth"}), BAID, DIV2K)
    assert [(p.stage, p.round) for p in phases] == [(s, r) for r in range(23) for s in (ENHANCE, REFINE)]
    assert [p.iterations for p in phases] == [2100, 1000] * 23
    assert sum(p.iterations for p in phases) == 71_300


def test_default_schedule_learns_the_prompts_first() -> None:
    # Stage 1: ceil(2 * 384 / 16) = 48 batches an epoch, 8,000 iterations = 167 epochs, + 1 reset. 1,832 epochs
    # left = 21 rounds (1,827) and 5 epochs of stage 3: 5 * 48 = 240 iterations.
    phases = plan(from_mapping({}), BAID, DIV2K)
    assert phases[0].stage == PROMPT_INIT and phases[0].iterations == 8000
    assert [p.iterations for p in phases[1:-1]] == [2100, 1000] * 21
    assert (phases[-1].stage, phases[-1].round, phases[-1].iterations) == (ENHANCE, 21, 240)
    assert sum(p.iterations for p in phases) == 73_340


def test_readme_from_scratch_command_is_about_109000_iterations() -> None:
    # --num_epochs 3000 --num_reconstruction_iters 1000 --num_clip_pretrained_iters 8000: stage 1 (167 + 1 epochs),
    # stage 2 (ceil(1000 / 48) = 21 + 1), then 2,810 epochs = 32 rounds (2,784) and 26 epochs of stage 3:
    # 26 * 48 = 1,248 iterations. 8,000 + 1,000 + 32 * 3,100 + 1,248 = 109,448.
    phases = plan(from_mapping({"init_enhancer": "none", "epochs": 3000}), BAID, DIV2K)
    assert [(p.stage, p.iterations) for p in phases[:2]] == [(PROMPT_INIT, 8000), (WARMUP, 1000)]
    assert (phases[-1].stage, phases[-1].round, phases[-1].iterations) == (ENHANCE, 32, 1248)
    assert sum(p.iterations for p in phases) == 109_448


def test_rounds_option_ends_the_plan() -> None:
    config = from_mapping({"init_prompts": "p.pt", "rounds": 2, "epochs": None})
    assert [phase_at(config, i) for i in range(5)] == [(ENHANCE, 0), (REFINE, 0), (ENHANCE, 1), (REFINE, 1), None]
    assert len(plan(config, BAID, DIV2K)) == 4


def progress(losses: list[float], iteration: int, target: int, extensions: int = 0) -> Progress:
    return Progress(
        iteration=iteration, target=target, extensions=extensions, window=losses[-20:], recent_losses=losses[-30:]
    )


@pytest.mark.parametrize(
    ("losses", "test", "due"),
    [
        ([95.0, 95.0, 95.0, 80.0], "last-loss", False),  # the last batch's 80 < 90, though the mean is 91.25
        ([95.0, 95.0, 95.0, 80.0], "running-mean", True),
        ([50.0, 50.0, 95.0], "last-loss", True),  # the last batch's 95 > 90, though the mean is 65
        ([50.0, 50.0, 95.0], "running-mean", False),
    ],
)
def test_extension_tests_the_last_loss_by_default(losses: list[float], test: str, due: bool) -> None:
    config = from_mapping({"extension_test": test})
    assert extension_due(progress(losses, iteration=10, target=10), config, above=90.0) is due
    assert not extension_due(progress(losses, iteration=9, target=10), config, above=90.0)  # not the last iteration


def test_extensions_have_only_a_safety_cap() -> None:
    config = from_mapping({})
    assert config.max_extensions == 1000
    assert extension_due(progress([100.0], 10, 10, extensions=999), config, above=90.0)
    assert not extension_due(progress([100.0], 10, 10, extensions=1000), config, above=90.0)


def test_official_best_score_is_the_zero_filled_30_slot_mean_every_20_iterations() -> None:
    # Iteration 20 of a round: 20 losses of 60 in a 30-slot buffer of zeros: 1,200 / 30 = 40 (2/3 of the mean).
    assert official_best_score(progress([60.0] * 20, iteration=20, target=2100)) == pytest.approx(40.0)
    assert official_best_score(progress([60.0] * 19, iteration=19, target=2100)) is None
    # Iteration 40: the last 30 losses, here 10 of 60 then 20 of 45: (600 + 900) / 30 = 50. Not below 40, so the
    # model of iteration 20 stays the best although every later loss was lower.
    assert official_best_score(progress([60.0] * 20 + [45.0] * 20, 40, 2100)) == pytest.approx(50.0)


def stub_run(config: Any, tmp_path: Path, latest: torch.Tensor, best: torch.Tensor) -> Any:
    """The parts of a RunState that stage 3's prepare and decisions touch."""
    enhancer = torch.nn.Linear(1, 1)
    return SimpleNamespace(
        config=config,
        ctx=SimpleNamespace(rank=0, world=1),
        backlit=[tmp_path / "a.png"],
        models=SimpleNamespace(prompts=SimpleNamespace(embeddings=latest), enhancer=enhancer),
        best_prompts=best,
        best_enhancer=None,
        progress=Progress(target=2100),
    )


@pytest.mark.parametrize(("choice", "expected"), [("latest", 0.0), ("best", 1.0)])
def test_stage3_uses_the_latest_prompts_by_default(tmp_path: Path, choice: str, expected: float) -> None:
    # The official best_prompt is the very object it trains: stage 3 sees the prompts as stage 4 left them.
    config = from_mapping({"stage3_prompts": choice})
    run = stub_run(config, tmp_path, latest=torch.zeros(2, 77, 8), best=torch.ones(2, 77, 8))
    stage = Enhance(run, 1)
    stage.prepare()
    assert torch.equal(stage.prompts, torch.full((2, 77, 8), expected))


def test_stage3_best_enhancer_is_chosen_by_the_official_test(tmp_path: Path) -> None:
    run = stub_run(from_mapping({}), tmp_path, torch.zeros(2, 77, 8), torch.zeros(2, 77, 8))
    stage, p = Enhance(run, 0), run.progress
    for iteration, loss in enumerate([60.0] * 20 + [45.0] * 20, start=1):
        p.iteration, p.window, p.recent_losses = iteration, [*p.window, loss][-20:], [*p.recent_losses, loss][-30:]
        with torch.no_grad():
            run.models.enhancer.weight.fill_(iteration)  # the enhancer "is" its iteration number
        stage.after_step({"loss": loss})
    assert run.best_enhancer["weight"].item() == 20 and p.best_loss == pytest.approx(40.0)

    run = stub_run(from_mapping({"best_enhancer": "running-mean"}), tmp_path, torch.zeros(1), torch.zeros(1))
    stage, p = Enhance(run, 0), run.progress
    for iteration, loss in enumerate([60.0] * 20 + [45.0] * 20, start=1):
        p.iteration, p.window = iteration, [*p.window, loss][-20:]
        with torch.no_grad():
            run.models.enhancer.weight.fill_(iteration)
        stage.after_step({"loss": loss})
    assert run.best_enhancer["weight"].item() == 40  # the running loss fell with every lower loss
