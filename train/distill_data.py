"""The samples a distillation trains on: the teacher, the augmented crops and the on-disk cache of its light maps.

The teacher is expensive (~0.5 MFLOP per pixel, seconds per photo on a CPU), so each training sample is made once and
cached: a random crop of a photo at a random scale, with random exposure, gamma and backlight (a smooth darkening of
part of the frame), quantised to 8 bits like a real frame, together with the teacher's light map *of that crop*. The
crop is the whole input the teacher saw, so the pair is exact even though the teacher's pyramid pooling is global.
All randomness is seeded per sample, which is what makes a resumed run exact (:mod:`cliplit.train.distill`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cliplit.core.atomic import atomic_output
from cliplit.core.contract import META_MODEL_NAME
from cliplit.core.errors import CliplitError
from cliplit.core.images import is_image_path, read_image
from cliplit.core.light_map import to_uint8
from cliplit.core.ort_session import cpu_session
from cliplit.core.weights import sha256_of
from cliplit.train.checkpoint import load_enhancer
from cliplit.train.distill_config import DistillConfig

# ---------------------------------------------------------------------------------------------------------- teacher


@dataclass
class Teacher:
    """A light-map function of RGB uint8 H×W×3 images, with the name and hash that identify its outputs."""

    name: str
    sha256: str
    light_map: Callable[[np.ndarray], np.ndarray]


def load_teacher(spec: str, device: torch.device) -> Teacher:
    """A released name, a ``.pth``, a ``cliplit train`` checkpoint, or a float-I/O ONNX export (run by ONNX Runtime)."""
    if str(spec).lower().endswith(".onnx"):
        return _onnx_teacher(Path(spec))
    checkpoint = load_enhancer(spec)
    model = checkpoint.model.to(device).eval()

    def light_map(rgb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(to_tensor(rgb[None], device))[0, 0].cpu().numpy()

    return Teacher(checkpoint.name, checkpoint.sha256, light_map)


def _onnx_teacher(path: Path) -> Teacher:
    """ONNX Runtime directly (not cliplit.runtime: train/ imports only core); needs the float variant's light map."""
    if not path.is_file():
        raise CliplitError(f"teacher {path} not found")
    session = cpu_session(path)
    outputs = [o.name for o in session.get_outputs()]
    if "light_map" not in outputs:
        raise CliplitError(f"teacher {path} has no light_map output: export it with --io float")
    input_name = session.get_inputs()[0].name
    name = session.get_modelmeta().custom_metadata_map.get(META_MODEL_NAME, path.stem)  # "clip-lit", not a file stem

    def light_map(rgb: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        return session.run(["light_map"], {input_name: image})[0][0, 0]

    return Teacher(name, sha256_of(path), light_map)


def to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """N×H×W×3 uint8 RGB → N×3×H×W float in [0, 1], computed as uint8 / 255 like the official inference."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(0, 3, 1, 2).float() / 255.0


# ----------------------------------------------------------------------------------------------------- augmentation


def list_images(folders: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise CliplitError(f"--images {folder}: not a folder")
        files += sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_path(p))
    if len(files) < 2:
        raise CliplitError(f"--images {' '.join(folders)}: need at least 2 photos (found {len(files)})")
    return files


def split_images(files: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded, order-independent split: photos are ranked by a hash of their name, the first ones are held out."""
    ranked = sorted(files, key=lambda p: hashlib.sha256(f"{seed}:{p.name}".encode()).hexdigest())
    held = max(1, round(len(files) * fraction))
    return ranked[held:], ranked[:held]


def backlight_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth field in [0, 1]: a random linear gradient blended with upsampled coarse noise (a shadowed region)."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height).astype(np.float32)
    blobs = cv2.resize(rng.random((4, 4), dtype=np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    field = ramp + rng.uniform(0.0, 1.5) * blobs
    return (field - field.min()) / max(float(field.max() - field.min()), 1e-6)


def augment(rgb: np.ndarray, crop: int, scale: tuple[float, float], photometric: bool, rng: np.random.Generator):
    """A random-scale crop of ``rgb`` (uint8), with exposure, gamma and backlight changes unless ``photometric`` is
    False; returns uint8 RGB, quantised like a real frame."""
    height, width = rgb.shape[:2]
    low = max(scale[0], min(crop / min(height, width), scale[1]))  # never smaller than the crop if possible
    factor = math.exp(rng.uniform(math.log(low), math.log(max(low, scale[1]))))
    size = (max(2, round(width * factor)), max(2, round(height * factor)))
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    image = cv2.resize(rgb, size, interpolation=method)
    ch, cw = min(crop, size[1]), min(crop, size[0])
    top, left = int(rng.integers(0, size[1] - ch + 1)), int(rng.integers(0, size[0] - cw + 1))
    image = image[top : top + ch, left : left + cw]
    if not photometric:
        return np.ascontiguousarray(image)
    x = image.astype(np.float32) / 255.0
    gain = math.exp(rng.uniform(math.log(0.5), math.log(1.4)))
    gamma = math.exp(rng.uniform(math.log(0.7), math.log(1.5)))
    depth = rng.uniform(0.0, 0.75)
    x = gain * np.power(x, gamma) * (1.0 - depth * backlight_mask(ch, cw, rng))[..., None]
    return to_uint8(x)


# ------------------------------------------------------------------------------------------------------------ cache


@dataclass
class Sample:
    rgb: np.ndarray  # H×W×3 uint8
    light_map: np.ndarray  # H×W float32, the teacher's


def _photo_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(read_image(path)[..., ::-1])


def build_samples(config: DistillConfig, teacher: Teacher, photos: list[Path], *, validation: bool) -> list[Sample]:
    """Make (or read from the cache) the training crops or the validation photos with the teacher's light maps."""
    cache = config.cache_dir() / teacher.sha256[:16]
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(photo, i) for photo in photos for i in range(1 if validation else config.samples_per_image)]
    samples = []
    label = "teacher (validation)" if validation else "teacher (training crops)"
    digests = {photo: sha256_of(photo) for photo in photos}  # the cache key follows the photo's content, not its name
    for photo, index in tqdm(jobs, desc=label, unit="img", dynamic_ncols=True):
        recipe = {"photo": digests[photo], "index": index, "seed": config.seed, "validation": validation}
        recipe.update(
            {"val_size": config.val_size}
            if validation
            else {"crop": config.crop, "scale": [config.scale_min, config.scale_max]}
        )
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:24]
        target = cache / f"{photo.stem}-{key}.npz"
        if target.is_file():
            with np.load(target) as data:
                samples.append(Sample(data["rgb"], data["light_map"]))
            continue
        rgb = _make_input(config, photo, index, key, validation)
        sample = Sample(rgb, teacher.light_map(rgb).astype(np.float32))
        with atomic_output(target, overwrite=True) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, rgb=sample.rgb, light_map=sample.light_map)
        samples.append(sample)
    return samples


def _make_input(config: DistillConfig, photo: Path, index: int, key: str, validation: bool) -> np.ndarray:
    rgb = _photo_rgb(photo)
    if validation:
        factor = min(1.0, config.val_size / max(rgb.shape[:2]))
        if factor < 1.0:
            size = (max(2, round(rgb.shape[1] * factor)), max(2, round(rgb.shape[0] * factor)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return rgb
    rng = np.random.default_rng(int(key, 16))
    # the first crop of each photo keeps its own lighting, so the natural distribution is always represented
    return augment(rgb, config.crop, (config.scale_min, config.scale_max), index > 0, rng)
