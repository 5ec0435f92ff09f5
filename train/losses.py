"""CLIP-LIT's losses as plain functions of tensors, so each can be checked against values computed by hand.

Scores: for an image, logits = scale * cos(image feature, prompt feature) over the (negative, positive) prompt pair,
and s = softmax(logits)[negative] is how "backlit" CLIP finds it. Stage 1 classifies with cross-entropy, stage 3 pushes
s(enhanced) down while the identity loss keeps the content, stage 4 ranks images by s with margins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cliplit.train.prompts import NEGATIVE

BACKLIT, WELL_LIT, NEWER, OLDER = "backlit", "well_lit", "newer", "older"


def prompt_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """N x 2 logits: ``scale`` times the cosine similarity of each image to each prompt."""
    return scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def prompt_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Stage 1: mean cross-entropy with label 0 = backlit, 1 = well-lit."""
    return F.cross_entropy(logits, labels)


def negative_score(logits: torch.Tensor) -> torch.Tensor:
    """s = P(negative | image), the softmax over the two prompts (N)."""
    return torch.softmax(logits, dim=-1)[:, NEGATIVE]


def clip_enhance_loss(logits: torch.Tensor, weight: float) -> torch.Tensor:
    """Stage 3's CLIP loss: ``weight`` times the mean over images of P(negative | enhanced)."""
    return weight * negative_score(logits).mean()


def identity_loss(
    enhanced_features: Sequence[torch.Tensor], input_features: Sequence[torch.Tensor], layer_weights: Sequence[float]
) -> torch.Tensor:
    """Σ_images Σ_l w_l · MSE(f_l(enhanced), f_l(input)): per-image MSE of each stage, summed over the batch.

    Summed, not averaged, over images as the released code does; the caller applies the overall scale (25).
    """
    if not len(enhanced_features) == len(input_features) == len(layer_weights):
        raise ValueError(
            f"{len(enhanced_features)} enhanced and {len(input_features)} input feature maps for "
            f"{len(layer_weights)} layer weights"
        )
    total = enhanced_features[0].new_zeros(())
    for weight, enhanced, reference in zip(layer_weights, enhanced_features, input_features, strict=True):
        per_image = (enhanced.float() - reference.float()).pow(2).flatten(1).mean(dim=1)
        total = total + weight * per_image.sum()
    return total


@dataclass(frozen=True)
class RankTerm:
    """One margin constraint s(higher) > s(lower) + margin."""

    higher: str
    lower: str
    margin: float


@dataclass(frozen=True)
class RankMargins:
    """The margins of stage 4 (defaults: the released code's)."""

    no_result: float = 1.0
    backlit: float = 0.9
    one_result: float = 0.2
    two_results: float = 0.1


def ranking_terms(num_results: int, margins: RankMargins, order: str = "released") -> list[RankTerm]:
    """The constraints of stage 4 given how many per-round results exist (only the last two are used).

    With two results, ``order="released"`` ranks s(newer) > s(older) as the released code does; "progressive" ranks
    s(older) > s(newer) (later results should look less backlit).
    """
    if num_results == 0:
        return [RankTerm(BACKLIT, WELL_LIT, margins.no_result)]
    if num_results == 1:
        return [
            RankTerm(BACKLIT, WELL_LIT, margins.backlit),
            RankTerm(BACKLIT, NEWER, margins.backlit),
            RankTerm(NEWER, WELL_LIT, margins.one_result),
        ]
    if order == "released":
        first, second = NEWER, OLDER
    elif order == "progressive":
        first, second = OLDER, NEWER
    else:
        raise ValueError(f"unknown rank order {order!r}; expected 'released' or 'progressive'")
    return [
        RankTerm(BACKLIT, WELL_LIT, margins.backlit),
        RankTerm(BACKLIT, first, margins.backlit),
        RankTerm(first, second, margins.two_results),
        RankTerm(second, WELL_LIT, margins.two_results),
    ]


def ranking_loss(scores: Mapping[str, torch.Tensor], terms: Sequence[RankTerm]) -> torch.Tensor:
    """Σ_terms mean_batch max(0, margin - (s(higher) - s(lower))): PyTorch's margin ranking loss with target 1."""
    total = next(iter(scores.values())).new_zeros(())
    for term in terms:
        total = total + torch.clamp(term.margin - (scores[term.higher] - scores[term.lower]), min=0).mean()
    return total
