"""CLIP-LIT's losses as plain functions of tensors, so each can be checked against values computed by hand, and
``stage3_loss``, one whole enhancer-training loss as a training step computes it.

Scores: for an image, logits = scale * cos(image feature, prompt feature) over the (negative, positive) prompt pair,
and s = softmax(logits)[negative] is how "backlit" CLIP finds it. Stage 1 classifies with cross-entropy, stage 3 pushes
s(enhanced) down while the identity loss keeps the content, stage 4 ranks images by s with margins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F

from cliplit.train.clip_models import IdentityFeatures, ImageEncoder, Preprocess
from cliplit.train.network import apply_light_map
from cliplit.train.prompts import NEGATIVE, TextEncoder

DEFAULT_EOT_INDEX = 17  # start-of-text, 16 placeholders, end-of-text: the released prompts' layout

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


@dataclass(frozen=True)
class Stage3Weights:
    """The numbers of stage 3's loss (defaults: the official train.py's ``16*20*L_clip + 0.9*25*L_clip_MSE``)."""

    clip: float = 320.0
    identity_scale: float = 25.0
    identity: float = 0.9
    layers: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.5)
    logit_scale: float = 100.0


def stage3_loss(
    enhancer: torch.nn.Module,
    backlit: torch.Tensor,
    prompts: torch.Tensor,
    clip_model: open_clip.CLIP,
    identity_model: open_clip.CLIP,
    *,
    eot_index: int = DEFAULT_EOT_INDEX,
    weights: Stage3Weights = Stage3Weights(),
    clip_preprocess: Preprocess | None = None,
    identity_preprocess: Preprocess | None = None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> dict[str, torch.Tensor]:
    """One enhancer-training (stage 3) loss, exactly as a training step computes it; the trainer calls this.

    ``enhancer`` is the network in the "train" padding (or its DDP wrapper), ``backlit`` a float N x 3 x H x W batch
    in [0, 1], ``prompts`` the learned 2 x 77 x D prompt embeddings (negative first), ``clip_model`` and
    ``identity_model`` plain open_clip models (e.g. ``open_clip.create_model("ViT-B-32-quickgelu")`` and
    ``"RN101-quickgelu"``: OpenAI's architectures use QuickGELU). The preprocessing defaults to OpenAI's
    normalisation at each model's input size with the official bilinear resize; ``autocast`` wraps the towers'
    forward passes (the losses are computed in FP32).

    Returns ``total`` = ``clip`` + 0.9 * ``identity``, where ``clip`` = 320 * mean over images of
    softmax(100 * cos(image, prompts))[negative] on the enhanced images and ``identity`` = 25 * Σ_images Σ_l w_l *
    MSE(f_l(enhanced), f_l(backlit)) over the identity model's five stages (clip_score.py and train.py of
    ZhexinLiang/CLIP-LIT). The prompts get no gradient: stage 3 keeps them fixed.
    """
    enhanced = apply_light_map(backlit, enhancer(backlit))
    image_encoder = ImageEncoder(clip_model, clip_preprocess or Preprocess.for_model(clip_model))
    identity = IdentityFeatures(identity_model, identity_preprocess or Preprocess.for_model(identity_model))
    with autocast():
        with torch.no_grad():
            text = TextEncoder(clip_model)(prompts, eot_index)
            reference = identity(backlit)
        image_features = image_encoder(enhanced)
        enhanced_features = identity(enhanced)
    clip_part = clip_enhance_loss(prompt_logits(image_features, text, weights.logit_scale), weights.clip)
    identity_part = weights.identity_scale * identity_loss(enhanced_features, reference, weights.layers)
    return {"total": clip_part + weights.identity * identity_part, "clip": clip_part, "identity": identity_part}
