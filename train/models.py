"""The networks of a run: the frozen CLIP towers, the enhancer and the prompt pair.

Everything that can fail for a user-fixable reason (weights missing offline, an unknown model) is resolved before
anything is built. Building then happens in one fixed order after seeding every generator, so random CLIP weights
and a random enhancer follow from ``--seed`` and a resumed run rebuilds the same networks before its checkpoint
overwrites them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from torch import nn

from cliplit.core.weights import resolve_weights, sha256_of
from cliplit.train.checkpoint import load_enhancer
from cliplit.train.clip_models import IdentityFeatures, ImageEncoder, Preprocess, build_clip, resolve_clip
from cliplit.train.config import TrainConfig
from cliplit.train.network import LightMapNet
from cliplit.train.prompts import PromptPair, TextEncoder, check_prompts_fit, load_prompts


@dataclass
class Models:
    """The networks of one run, on its device; the CLIP models frozen, the enhancer in train mode."""

    clip: open_clip.CLIP
    clip_preprocess: Preprocess
    identity_clip: open_clip.CLIP | None  # both None when no stage needs the identity loss
    identity: IdentityFeatures | None
    enhancer: LightMapNet
    prompts: PromptPair
    init_sha256: str | None  # of the initial enhancer's file; None for a random start

    @property
    def image_encoder(self) -> ImageEncoder:
        return ImageEncoder(self.clip, self.clip_preprocess)

    @property
    def text_encoder(self) -> TextEncoder:
        return TextEncoder(self.clip)


def build_models(config: TrainConfig, device: torch.device, *, needs_identity: bool) -> Models:
    """Resolve all weights first, then seed and build in a fixed order (see the module docstring).

    With ``--amp official`` on CUDA the identity model's weights are converted to FP16, as the official code's
    ``clip.load("RN101", device="cuda")`` gives them (BatchNorm stays FP32 in both); the CLIP ViT stays FP32.
    """
    init_path = None if config.init_enhancer == "none" else resolve_weights(config.init_enhancer)
    options = {"cache_dir": config.clip_cache_dir, "offline": config.offline}
    clip_source = resolve_clip(config.clip_model, config.clip_pretrained, flag="--clip-pretrained", **options)
    identity_source = None
    if needs_identity:
        identity_source = resolve_clip(
            config.identity_model, config.identity_pretrained, flag="--identity-pretrained", **options
        )

    seed_everything(config.seed)
    clip = build_clip(clip_source, device)
    identity_clip = identity = None
    if identity_source is not None:
        identity_clip = build_clip(identity_source, device)
        identity = IdentityFeatures(identity_clip, identity_source.preprocess(config.clip_resize))
        if config.amp == "official" and device.type == "cuda":
            open_clip.model.convert_weights_to_lp(identity_clip, dtype=torch.float16)
    if init_path is None:
        enhancer, init_sha256 = fresh_enhancer(), None
    else:
        enhancer, init_sha256 = load_enhancer(init_path, padding="train").model, sha256_of(init_path)
    enhancer.to(device).train()
    if config.init_prompts:
        prompts = load_prompts(config.init_prompts, config.prompt_length)
    else:
        prompts = PromptPair.from_clip(clip, config.prompt_length)
    check_prompts_fit(prompts, clip)
    prompts.to(device)
    preprocess = clip_source.preprocess(config.clip_resize)
    return Models(clip, preprocess, identity_clip, identity, enhancer, prompts, init_sha256)


def fresh_enhancer() -> LightMapNet:
    """A random enhancer drawn as the official train.py draws one (``weights_init``, at the start and at every
    re-initialisation): every convolution's weight from N(0, 0.02), everything else PyTorch's default."""
    enhancer = LightMapNet("train")
    for module in enhancer.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
    return enhancer


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
