"""The frozen CLIP models of training, built with open_clip: which architecture, which weights, and how images go in.

Two steps, so that a missing download fails before any work: ``resolve_clip`` turns (model, pretrained) into an
architecture config and a local weights file (downloading if allowed), ``build_clip`` instantiates it. A model is an
open_clip name ("ViT-B-32", "ViT-B/32", "RN101") or the path of a model-config JSON (open_clip's format: ``embed_dim``,
``vision_cfg``, ``text_cfg``), which is how tests use tiny CLIPs. Weights are an open_clip tag ("openai"), a local
checkpoint (open_clip state dict, ``.safetensors`` or OpenAI's TorchScript ``.pt``) or "none" for random weights.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.modified_resnet import ModifiedResNet
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model
from torch import nn

from cliplit.core.errors import CliplitError

RANDOM_WEIGHTS = "none"
# Keys of TorchScript CLIP archives that are no parameters: OpenAI's metadata, and the causal text mask that scripting
# saves although open_clip rebuilds it from the context length.
_SCRIPTED_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


class ClipWeightsError(CliplitError):
    """CLIP weights are missing (offline, no cache) or unusable; the message says how to provide them."""


@dataclass(frozen=True)
class ClipSource:
    """A resolved CLIP: its architecture config, local weights (None: random) and image normalisation."""

    model: str
    pretrained: str
    config: dict[str, Any]
    weights: Path | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def image_size(self) -> int:
        size = self.config["vision_cfg"].get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    def preprocess(self, resize: str = "bilinear") -> Preprocess:
        """This model's input size and normalisation, with the given resize."""
        return Preprocess(self.image_size, self.mean, self.std, resize)


def resolve_clip(
    model: str,
    pretrained: str,
    *,
    cache_dir: str | None = None,
    offline: bool = False,
    flag: str = "--clip-pretrained",
) -> ClipSource:
    """Find the architecture and a local weights file, downloading tagged weights unless ``offline``.

    ``flag`` is the option that named the weights, so error messages tell the user which one to change.
    """
    name, config = _model_config(model)
    mean, std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    if pretrained.lower() == RANDOM_WEIGHTS:
        weights = None
    elif Path(pretrained).expanduser().is_file():
        weights = Path(pretrained).expanduser()
        if _is_torchscript(weights):
            config["quick_gelu"] = True  # OpenAI's archives, all QuickGELU (open_clip's OpenAI loader assumes it too)
    else:
        tag_cfg = get_pretrained_cfg(name, pretrained)
        if not tag_cfg:
            tags = ", ".join(list_pretrained_tags_by_model(name)) or "none known"
            raise ClipWeightsError(
                f"{flag} {pretrained!r} is neither a file nor an open_clip tag of {name} (tags: {tags}); "
                f"pass a tag, a local checkpoint file or '{RANDOM_WEIGHTS}'"
            )
        # OpenAI's weights were trained with QuickGELU; open_clip's plain configs use GELU.
        if tag_cfg.get("quick_gelu"):
            config["quick_gelu"] = True
        mean, std = tag_cfg.get("mean", mean), tag_cfg.get("std", std)
        weights = _fetch(name, pretrained, tag_cfg, cache_dir, offline, flag)
    return ClipSource(model, pretrained, config, weights, tuple(mean), tuple(std))


def _model_config(model: str) -> tuple[str, dict[str, Any]]:
    path = Path(model).expanduser()
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise CliplitError(f"model config {path} not found")
        config = json.loads(path.read_text(encoding="utf-8"))
        if not all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
            raise CliplitError(f"{path} is not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
        return path.stem, config
    name = model.replace("/", "-")
    config = open_clip.get_model_config(name)
    if config is None:
        raise CliplitError(f"unknown open_clip model {model!r}; give an open_clip model name or a model-config JSON")
    return name, config


def _fetch(name: str, tag: str, tag_cfg: dict[str, Any], cache_dir: str | None, offline: bool, flag: str) -> Path:
    cached = _cached_weights(tag_cfg, cache_dir)
    if cached is not None:
        return cached
    why = "offline mode is on"
    quick_gelu_name = name if name.endswith("-quickgelu") else f"{name}-quickgelu"
    if not offline:
        try:
            return Path(download_pretrained(tag_cfg, cache_dir=cache_dir))
        except Exception as error:  # urllib, huggingface_hub and OS errors all mean "could not download"
            why = f"download failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    raise ClipWeightsError(
        f"cannot get weights for CLIP model {name!r} with tag {tag!r}: {why}, and they are not in the cache "
        f"({_cache_description(cache_dir)}). Either run once with internet access to fill the cache, or download "
        f"{tag_cfg.get('url') or tag_cfg.get('hf_hub')} yourself and pass the local file instead of the tag "
        f"({flag} /path/to/file: OpenAI's original .pt works as it is; for a state-dict copy of OpenAI weights "
        f"also name the model {quick_gelu_name}, since OpenAI trained with QuickGELU)"
    )


def _cached_weights(tag_cfg: dict[str, Any], cache_dir: str | None) -> Path | None:
    """The already-downloaded file for a tag (Hugging Face cache or open_clip's URL cache), without network access."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        for candidate in (HF_SAFE_WEIGHTS_NAME, filename or HF_WEIGHTS_NAME):
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
            if isinstance(found, str):
                return Path(found)
    url = tag_cfg.get("url", "")
    if url:
        candidate = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)
        if candidate.is_file():
            return candidate
    return None


def _cache_description(cache_dir: str | None) -> str:
    if cache_dir:
        return f"cache directory {cache_dir}"
    from huggingface_hub.constants import HF_HUB_CACHE

    return f"cache directories {HF_HUB_CACHE} and {Path.home() / '.cache' / 'clip'}"


def build_clip(source: ClipSource, device: torch.device | str = "cpu") -> open_clip.CLIP:
    """Instantiate a frozen CLIP in eval mode (BatchNorm uses its running statistics); random init if no weights."""
    text_cfg = source.config.get("text_cfg", {})
    if "hf_model_name" in text_cfg or "timm_model_name" in source.config.get("vision_cfg", {}):
        raise CliplitError(f"{source.model}: only CLIP models with open_clip's own towers are supported")
    if text_cfg.get("pool_type", "argmax") != "argmax":
        raise CliplitError(f"{source.model}: the prompts need a text tower pooled at the end-of-text token")
    config = {key: value for key, value in source.config.items() if key != "custom_text"}
    model = open_clip.CLIP(**config)
    if source.weights is not None:
        _load_weights(model, source.weights)
    model.eval().requires_grad_(False)
    return model.to(device)


def _load_weights(model: open_clip.CLIP, path: Path) -> None:
    try:
        if _is_torchscript(path):
            # OpenAI's original .pt files are TorchScript archives; their state dict uses open_clip's CLIP names.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in _SCRIPTED_EXTRA_KEYS:
                state.pop(key, None)
            model.load_state_dict(state, strict=True)
        else:
            open_clip.load_checkpoint(model, str(path))
    except (RuntimeError, KeyError, ValueError) as error:
        raise ClipWeightsError(f"{path} does not hold weights for this CLIP architecture: {error}") from error


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


@dataclass(frozen=True)
class Preprocess:
    """How RGB [0, 1] images become a CLIP tower's input: resized to ``size`` x ``size``, normalised with mean/std.

    ``resize`` "bilinear" is bilinear interpolation without antialiasing: what the official training code's
    ``transforms.Resize((224, 224))`` computes on tensors with torchvision 0.14 (clip_score.py of ZhexinLiang/CLIP-LIT;
    newer torchvision antialiases by default, so the behaviour is matched, not the call). Shrinking 512 to 224 that
    way reads only 448 of every 512 rows and columns. "bicubic-antialias" is CLIP's own preprocessing.
    """

    size: int
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN
    std: tuple[float, ...] = OPENAI_DATASET_STD
    resize: str = "bilinear"

    @classmethod
    def for_model(cls, clip: open_clip.CLIP, resize: str = "bilinear") -> Preprocess:
        """OpenAI's normalisation at the image tower's own input size (open_clip stores an int or a pair)."""
        size = clip.visual.image_size
        return cls(int(size if isinstance(size, int) else size[0]), resize=resize)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.size, self.size):
            size = (self.size, self.size)
            if self.resize == "bilinear":
                images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)
            elif self.resize == "bicubic-antialias":
                images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
            else:
                raise ValueError(f"unknown resize {self.resize!r}; expected 'bilinear' or 'bicubic-antialias'")
        mean_t = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std_t = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean_t) / std_t


class ImageEncoder(nn.Module):
    """CLIP's image tower with its preprocessing: RGB [0, 1] in, unit-norm features out."""

    def __init__(self, clip: open_clip.CLIP, preprocess: Preprocess) -> None:
        super().__init__()
        self.visual, self.preprocess = clip.visual, preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(self.preprocess(images)).float(), dim=-1)


class IdentityFeatures(nn.Module):
    """The five stages of a CLIP ResNet (stem, layer1..layer4) on its normalised input: the identity loss's f_l.

    The input is cast to the tower's weight type, as the official ``encode_image`` does: FP16 when the tower was
    converted to it (the official RN101 on CUDA), else FP32.
    """

    def __init__(self, clip: open_clip.CLIP, preprocess: Preprocess) -> None:
        super().__init__()
        if not isinstance(clip.visual, ModifiedResNet):
            raise CliplitError("the identity model must be a CLIP ResNet (e.g. RN101), not a ViT")
        self.visual, self.preprocess = clip.visual, preprocess

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.preprocess(images).to(self.visual.conv1.weight.dtype)
        features = []
        for stage in (self.visual.stem, self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
            x = stage(x)
            features.append(x)
        return features
