"""CLIP-LIT's losses against values worked out by hand on tiny tensors (the arithmetic is in the comments), and the
whole stage-3 loss against the official formula on OpenAI's architectures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from train_helpers import bilinear_reference

from cliplit.train.checkpoint import load_enhancer
from cliplit.train.enhancer_stages import luma_psnr
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
    stage3_loss,
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


OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def official_stage3_loss(
    enhancer: torch.nn.Module, x: torch.Tensor, tokens: torch.Tensor, clip: torch.nn.Module, rn: torch.nn.Module
) -> dict[str, float]:
    """The official stage-3 loss, written from its definition (train.py, clip_score.py of ZhexinLiang/CLIP-LIT),
    image by image as the official code loops, with open_clip's own encoders and an independent bilinear resize:

        final = clamp(x / (L + 1e-9), 0, 1)
        clip = 16 * 20 * mean_i softmax(100 * cos(E_img(N(R(final_i))), E_text(prompts)))[0]
        identity = 25 * Σ_i Σ_l w_l * mean((f_l(N(R(final_i))) - f_l(N(R(x_i))))^2),  w = 1, 1, 1, 1, 0.5
        total = clip + 0.9 * identity

    with R the 224 x 224 bilinear resize without antialiasing, N OpenAI's normalisation and f_l the RN101's stem and
    four layers. The prompts are token embeddings of ``tokens``, so E_text is open_clip's ``encode_text(tokens)``.
    """
    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)

    def prepare(image: torch.Tensor) -> torch.Tensor:
        resized = torch.from_numpy(bilinear_reference(image.double().numpy(), 224)).float()
        return ((resized - mean) / std)[None]

    with torch.no_grad():
        final = torch.clamp(x / (enhancer(x) + 1e-9), 0, 1)
        text = clip.encode_text(tokens, normalize=True)
        probabilities, identity = [], 0.0
        for i in range(len(x)):
            features = clip.encode_image(prepare(final[i]), normalize=True)
            probabilities.append(torch.softmax(100 * features @ text.T, dim=-1)[0, 0].item())
            stages = [rn.visual.forward_intermediates(prepare(im[i]), intermediates_only=True) for im in (final, x)]
            pairs = zip(stages[0]["image_intermediates"], stages[1]["image_intermediates"], strict=True)
            identity += sum(w * F.mse_loss(a, b).item() for w, (a, b) in zip((1, 1, 1, 1, 0.5), pairs, strict=True))
    clip_part = 16 * 20 * sum(probabilities) / len(probabilities)
    return {"clip": clip_part, "identity": 25 * identity, "total": clip_part + 0.9 * 25 * identity}


class Brightening(torch.nn.Module):
    """The released initial enhancer (close to the identity) with its light map halved: outputs twice as bright, so
    the identity term has something to measure."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.base(x)


@pytest.mark.slow
def test_stage3_loss_is_the_official_formula_on_openai_architectures(init_weights: Path) -> None:
    """Random-weight ViT-B/32 and RN101 in OpenAI's architecture (QuickGELU), an enhancer in the train padding, two
    96 x 96 images: stage3_loss agrees with the formula above to 1e-4 relative (measured: 7e-6 for the CLIP term,
    1e-8 for the identity term)."""
    import open_clip

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32-quickgelu").eval()
    rn = open_clip.create_model("RN101-quickgelu").eval()
    enhancer = Brightening(load_enhancer(init_weights, padding="train").model)
    x = torch.rand(2, 3, 96, 96) * torch.linspace(0.1, 1.0, 96).view(1, 1, 96, 1)  # darker towards the top
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0], tokens[:, 17] = 49406, 49407  # start and end of text around 16 prompt tokens, as the released pair
    tokens[:, 1:17] = torch.randint(1, 49406, (2, 16))
    with torch.no_grad():
        prompts = clip.token_embedding(tokens)
    expected = official_stage3_loss(enhancer, x, tokens, clip, rn)
    actual = stage3_loss(enhancer, x, prompts, clip, rn)
    for key in ("total", "clip", "identity"):
        assert actual[key].item() == pytest.approx(expected[key], rel=1e-4), key
    assert actual["total"].requires_grad and 1.0 < expected["clip"] < 319.0  # P(backlit) neither 0 nor 1


def test_luma_psnr_is_the_official_warm_up_measure() -> None:
    # Green off by 0.1 everywhere: the luma (BT.601, pyiqa's rgb2ycbcr) differs by 128.553 / 255 * 0.1 = 0.0504129,
    # MSE 0.00254146, PSNR 10 * log10(1 / (0.00254146 + 1e-8)) = 25.9493 dB; an identical pair: 10 * log10(1e8) = 80.
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0, 1] = 0.1
    assert luma_psnr(a[:1], b[:1]) == pytest.approx(25.9493, abs=1e-3)
    assert luma_psnr(a, b) == pytest.approx((25.9493 + 80.0) / 2, abs=1e-3)  # the mean of each image's PSNR
