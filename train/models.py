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
import torch

from cliplit.core.weights import resolve_weights, sha256_of
from cliplit.train.checkpoint import load_enhancer
from cliplit.train.clip_models import IdentityFeatures, ImageEncoder, build_clip, resolve_clip
from cliplit.train.config import TrainConfig
from cliplit.train.network import LightMapNet
from cliplit.train.prompts import PromptPair, TextEncoder, check_prompts_fit, load_prompts


@dataclass
class Models:
    """The networks of one run, on its device; the CLIP towers frozen, the enhancer in train mode."""

    image_encoder: ImageEncoder
    text_encoder: TextEncoder
    identity: IdentityFeatures | None  # None when no stage needs the identity loss
    enhancer: LightMapNet
    prompts: PromptPair
    init_sha256: str | None  # of the initial enhancer's file; None for a random start


def build_models(config: TrainConfig, device: torch.device, *, needs_identity: bool) -> Models:
    """Resolve all weights first, then seed and build in a fixed order (see the module docstring)."""
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
    identity = None
    if identity_source is not None:
        identity = IdentityFeatures(build_clip(identity_source, device), identity_source)
    if init_path is None:
        enhancer, init_sha256 = LightMapNet("train"), None
    else:
        enhancer, init_sha256 = load_enhancer(init_path, padding="train").model, sha256_of(init_path)
    enhancer.to(device).train()
    if config.init_prompts:
        prompts = load_prompts(config.init_prompts, config.prompt_length)
    else:
        prompts = PromptPair.from_clip(clip, config.prompt_length)
    check_prompts_fit(prompts, clip)
    prompts.to(device)
    return Models(ImageEncoder(clip, clip_source), TextEncoder(clip), identity, enhancer, prompts, init_sha256)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
