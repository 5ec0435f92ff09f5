"""Helpers for the training tests (this module holds no tests): tiny CLIP configs, synthetic backlit scenes and a
bilinear resize written from its definition.

No CLIP weights exist offline, so the tests train against tiny open_clip architectures with random weights, saved
to a checkpoint file so that training and evaluation load the very same network. The synthetic scenes are what the
method is about: backlit ones have a bright sky and dark silhouettes, well-lit ones are evenly exposed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

# Text towers keep CLIP's context and vocabulary (the prompts use CLIP's tokenizer); everything else is tiny.
TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_VIT = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8}}
TINY_RESNET = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}}
SIZE = 32


def write_tiny_clip(folder: Path, name: str, architecture: dict, seed: int) -> tuple[Path, Path]:
    """A model-config JSON and a checkpoint of that model with random weights drawn from ``seed``."""
    import open_clip

    config = {**architecture, "text_cfg": TINY_TEXT}
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    torch.manual_seed(seed)
    weights_path = folder / f"{name}.pt"
    torch.save(open_clip.CLIP(**config).state_dict(), weights_path)
    return config_path, weights_path


def backlit_scene(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A backlit RGB float scene and the mask of its dark (silhouette and ground) pixels."""
    rows = np.linspace(0, 1, size)[:, None, None]
    sky = np.concatenate([0.95 - 0.1 * rows, 0.9 - 0.15 * rows, 0.85 - 0.25 * rows], axis=2)
    image = np.broadcast_to(sky, (size, size, 3)).copy()
    dark = np.zeros((size, size), dtype=bool)
    dark[int(size * rng.uniform(0.45, 0.65)) :] = True
    for _ in range(rng.integers(1, 4)):
        x0, width = rng.integers(0, size - 4), rng.integers(3, size // 3)
        dark[int(size * rng.uniform(0.15, 0.5)) :, x0 : x0 + width] = True
    colour = rng.uniform(0.6, 1.0, 3)
    texture = 0.03 + 0.05 * rng.random((size, size, 1))
    image[dark] = (texture * colour)[dark]
    return image.astype(np.float32), dark


def well_lit_scene(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """An evenly lit RGB float scene: mid-tone sky, ground and objects."""
    image = np.empty((size, size, 3))
    horizon = int(size * rng.uniform(0.35, 0.65))
    image[:horizon] = rng.uniform([0.35, 0.45, 0.55], [0.55, 0.65, 0.8])
    image[horizon:] = rng.uniform(0.3, 0.6, 3)
    for _ in range(rng.integers(1, 4)):
        x0, y0 = rng.integers(0, size - 6, 2)
        w, h = rng.integers(4, size // 2, 2)
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0.3, 0.75, 3)
    image += 0.04 * (rng.random((size, size, 1)) - 0.5)
    return np.clip(image, 0, 1).astype(np.float32)


def save_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.round(image[:, :, ::-1] * 255).astype(np.uint8))


def make_dataset(root: Path, backlit: int, well_lit: int, seed: int) -> tuple[Path, Path]:
    """Folders of synthetic backlit and well-lit PNGs.

    The file names contradict the folders (backlit scenes are called "normal_*", well-lit ones "backlit_*"): a loader
    that guessed labels from words in paths, as the released one did, would learn the classes the wrong way round.
    """
    rng = np.random.default_rng(seed)
    for index in range(backlit):
        save_rgb(root / "set1" / f"normal_{index:03d}.png", backlit_scene(rng)[0])
    for index in range(well_lit):
        save_rgb(root / "set2" / f"backlit_{index:03d}.png", well_lit_scene(rng))
    return root / "set1", root / "set2"


def bilinear_reference(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resampling of C x H x W to C x size x size, written from its definition: output pixel i samples the
    input at (i + 0.5) * H / size - 0.5 (pixel centres), clamped at 0, from the two nearest pixels; no antialiasing
    (the filter does not widen when shrinking). This is what torchvision 0.14's Resize((224, 224)) computes on
    tensors, the official training code's resize."""

    def weights(n_in: int) -> np.ndarray:
        matrix = np.zeros((size, n_in))
        for i in range(size):
            source = max((i + 0.5) * n_in / size - 0.5, 0.0)
            low = int(np.floor(source))
            high, fraction = min(low + 1, n_in - 1), source - low
            matrix[i, low] += 1 - fraction
            matrix[i, high] += fraction
        return matrix

    rows, cols = weights(image.shape[1]), weights(image.shape[2])
    return rows @ image @ cols.T
