"""CLIP-LIT's losses against values worked out by hand on tiny tensors (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from cliplit.train.losses import (
    BACKLIT,
    NEWER,
    OLDER,
    WELL_LIT,
    RankMargins,
    RankTerm,
    clip_enhance_loss,
    identity_loss,
    negative_score,
    prompt_cross_entropy,
    prompt_logits,
    ranking_loss,
    ranking_terms,
)


def test_prompt_logits_are_scaled_cosines() -> None:
    # (3, 4) / 5 = (0.6, 0.8); the prompts normalise to (1, 0) and (0, 1): cosines 0.6 and 0.8.
    logits = prompt_logits(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]]), scale=100.0)
    assert torch.allclose(logits, torch.tensor([[60.0, 80.0]]))


def test_prompt_cross_entropy() -> None:
    # Row 1, label 1: -log(e^2 / (e^1 + e^2)) = log(1 + e^-1) = 0.3132617. Row 2, label 0: log 2 = 0.6931472.
    logits = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    loss = prompt_cross_entropy(logits, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.5032044, abs=1e-6)


def test_negative_score_is_the_softmax_of_the_backlit_prompt() -> None:
    # e^1 / (e^1 + e^2) = 1 / (1 + e) = 0.2689414.
    scores = negative_score(torch.tensor([[1.0, 2.0], [0.5, 0.5]]))
    assert torch.allclose(scores, torch.tensor([1 / (1 + math.e), 0.5]))


def test_clip_loss_weights_the_mean_negative_probability() -> None:
    # 320 * mean(0.2689414, 0.5) = 320 * 0.3844707 = 123.03063.
    loss = clip_enhance_loss(torch.tensor([[1.0, 2.0], [0.5, 0.5]]), weight=320.0)
    assert loss.item() == pytest.approx(123.03063, abs=1e-3)


def test_identity_loss_sums_weighted_per_image_mse_over_the_batch() -> None:
    # Layer A (weight 1): per-image MSE of (1, 1) and (2, 2) against zeros = 1 and 4, summed = 5.
    # Layer B (weight 0.5): (1, 0, 0) and (0, 0, 0) against zeros = 1/3 and 0, so 0.5 * 1/3 = 1/6.
    enhanced = [torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])]
    reference = [torch.zeros(2, 2), torch.zeros(2, 3)]
    loss = identity_loss(enhanced, reference, (1.0, 0.5))
    assert loss.item() == pytest.approx(5 + 1 / 6, abs=1e-6)


def test_identity_loss_uses_every_stage_weight_and_sums_not_averages() -> None:
    # Five stages, every element off by 1 (MSE 1 per image and stage): each image adds sum(w) = 4.5.
    features = [torch.ones(1, 2, 3, 3) for _ in range(5)]
    zeros = [torch.zeros(1, 2, 3, 3) for _ in range(5)]
    weights = (1.0, 1.0, 1.0, 1.0, 0.5)
    assert identity_loss(features, zeros, weights).item() == pytest.approx(4.5)
    doubled = [torch.cat([f, f]) for f in features]
    assert identity_loss(doubled, [torch.cat([z, z]) for z in zeros], weights).item() == pytest.approx(9.0)
    with pytest.raises(ValueError, match="layer weights"):
        identity_loss(features, zeros, (1.0, 1.0))


MARGINS = RankMargins(no_result=1.0, backlit=0.9, one_result=0.2, two_results=0.1)


def test_ranking_terms_for_each_case() -> None:
    assert ranking_terms(0, MARGINS) == [RankTerm(BACKLIT, WELL_LIT, 1.0)]
    assert ranking_terms(1, MARGINS) == [
        RankTerm(BACKLIT, WELL_LIT, 0.9),
        RankTerm(BACKLIT, NEWER, 0.9),
        RankTerm(NEWER, WELL_LIT, 0.2),
    ]
    released = [
        RankTerm(BACKLIT, WELL_LIT, 0.9),
        RankTerm(BACKLIT, NEWER, 0.9),
        RankTerm(NEWER, OLDER, 0.1),
        RankTerm(OLDER, WELL_LIT, 0.1),
    ]
    assert ranking_terms(2, MARGINS) == released
    assert ranking_terms(5, MARGINS) == released  # only the last two results take part
    assert ranking_terms(2, MARGINS, "progressive") == [
        RankTerm(BACKLIT, WELL_LIT, 0.9),
        RankTerm(BACKLIT, OLDER, 0.9),
        RankTerm(OLDER, NEWER, 0.1),
        RankTerm(NEWER, WELL_LIT, 0.1),
    ]
    with pytest.raises(ValueError, match="rank order"):
        ranking_terms(2, MARGINS, "sideways")


SCORES = {
    BACKLIT: torch.tensor([0.9, 0.6]),
    WELL_LIT: torch.tensor([0.1, 0.2]),
    NEWER: torch.tensor([0.5, 0.55]),
    OLDER: torch.tensor([0.3, 0.6]),
}


@pytest.mark.parametrize(
    ("results", "order", "expected"),
    [
        # backlit > well-lit + 1.0: max(0, 1 - 0.8) = 0.2 and max(0, 1 - 0.4) = 0.6, mean 0.4.
        (0, "released", 0.4),
        # b > w + 0.9: (0.1 + 0.5) / 2 = 0.3; b > newer + 0.9: (0.5 + 0.85) / 2 = 0.675; newer > w + 0.2: 0.
        (1, "released", 0.975),
        # 0.3 + 0.675; newer > older + 0.1: (0 + 0.15) / 2 = 0.075; older > w + 0.1: 0.
        (2, "released", 1.05),
        # 0.3; b > older + 0.9: (0.3 + 0.9) / 2 = 0.6; older > newer + 0.1: (0.3 + 0.05) / 2 = 0.175; newer > w: 0.
        (2, "progressive", 1.075),
    ],
)
def test_ranking_loss_by_hand(results: int, order: str, expected: float) -> None:
    loss = ranking_loss(SCORES, ranking_terms(results, MARGINS, order))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_ranking_loss_matches_pytorch_margin_ranking_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = {name: torch.rand(6, generator=generator) for name in (BACKLIT, WELL_LIT, NEWER, OLDER)}
    terms = ranking_terms(2, MARGINS)
    expected = sum(
        torch.nn.MarginRankingLoss(margin=t.margin)(scores[t.higher], scores[t.lower], torch.ones(6)) for t in terms
    )
    assert ranking_loss(scores, terms).item() == pytest.approx(float(expected), abs=1e-6)
