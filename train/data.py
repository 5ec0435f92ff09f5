"""Training data: image folders, augmentation and batches that are a pure function of (seed, stage, round, step).

Labels come from the folder an image is in, never from its file name (the released loader guessed them from words in
the path). Every batch -- which images, which augmentation -- is derived from a seed built from (run seed, stream,
step), not from a sampler's or worker's state. So a resumed run sees exactly the batches the uninterrupted run would
have, whatever the number of data-loading workers, and torchrun ranks take disjoint slices of one global batch (what
DistributedSampler does, without state that would need saving mid-epoch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cliplit.core.errors import CliplitError
from cliplit.core.images import is_image_path, read_image

DIHEDRAL_SYMMETRIES = 8  # horizontal flip x rot90 by 0..3 quarter turns: the 8 symmetries of a square


def list_images(folder: str | Path, what: str) -> list[Path]:
    """All images under ``folder`` (recursive, sorted), with an error naming the option when there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CliplitError(f"{what} folder {folder} does not exist")
    images = sorted(path for path in folder.rglob("*") if path.is_file() and is_image_path(path))
    if not images:
        raise CliplitError(f"{what} folder {folder} holds no images")
    return images


def load_rgb(path: Path, size: int) -> torch.Tensor:
    """3 x size x size float RGB in [0, 1]; the aspect ratio is not kept (as the released loader does)."""
    bgr = read_image(path)
    shrinking = bgr.shape[0] > size or bgr.shape[1] > size
    resized = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    rgb = np.ascontiguousarray(resized[:, :, ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def step_generator(seed: int, stream: str, step: int) -> torch.Generator:
    """A generator seeded from (seed, stream, step); ``stream`` names the stage and round."""
    words = [seed & 0xFFFFFFFF, *stream.encode(), step]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class AugmentSpec:
    """What augmentation a stage uses: "full", "dihedral" (flips and quarter turns only) or "none"."""

    mode: str = "full"
    max_zoom: float = 1.25
    max_rotation: float = 15.0


@dataclass
class Augmentation:
    """Per-row parameters: dihedral symmetry (hflip * 4 + quarter turns), zoom factor and rotation in degrees."""

    symmetry: torch.Tensor
    zoom: torch.Tensor
    angle: torch.Tensor


def sample_augmentation(spec: AugmentSpec, rows: int, generator: torch.Generator) -> Augmentation:
    symmetry = torch.randint(0, DIHEDRAL_SYMMETRIES, (rows,), generator=generator)
    zoom = 1.0 + (spec.max_zoom - 1.0) * torch.rand(rows, generator=generator)
    angle = spec.max_rotation * (2.0 * torch.rand(rows, generator=generator) - 1.0)
    if spec.mode == "none":
        symmetry = torch.zeros_like(symmetry)
    if spec.mode != "full":
        zoom, angle = torch.ones_like(zoom), torch.zeros_like(angle)
    return Augmentation(symmetry, zoom, angle)


def apply_dihedral(images: torch.Tensor, symmetry: int) -> torch.Tensor:
    """One of the 8 square symmetries on (... x H x W) images."""
    if symmetry >= 4:
        images = images.flip(-1)
    return torch.rot90(images, symmetry % 4, dims=(-2, -1))


def apply_augmentation(images: torch.Tensor, augmentation: Augmentation) -> torch.Tensor:
    """Augment N x ... x 3 x S x S images, one parameter set per row, shared by everything in the row.

    Zoom and rotation resample with reflection at the borders, so no black corners teach the prompts a shortcut.
    """
    rows = images.shape[0]
    images = torch.stack([apply_dihedral(images[i], int(augmentation.symmetry[i])) for i in range(rows)])
    if bool((augmentation.zoom == 1.0).all()) and bool((augmentation.angle == 0.0).all()):
        return images
    radians = augmentation.angle * (math.pi / 180.0)
    cos, sin = torch.cos(radians) / augmentation.zoom, torch.sin(radians) / augmentation.zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    shape = images.shape
    flat = images.reshape(rows, -1, *shape[-2:])
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    warped = F.grid_sample(flat, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return warped.reshape(shape)


def batch_rows(n: int, batch_size: int, step: int, seed: int, stream: str, rank: int, world: int) -> torch.Tensor:
    """This rank's row indices for ``step``: epochs are fresh permutations, cut into global batches of
    ``batch_size * world`` consecutive rows; a rank takes its slice. Datasets smaller than a global batch repeat."""
    global_batch = batch_size * world
    per_epoch = max(1, n // global_batch)
    epoch, position = divmod(step, per_epoch)
    generator = step_generator(seed, f"{stream}/epoch", epoch)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(global_batch / n))])
    start = position * global_batch + rank * batch_size
    return order[start : start + batch_size]


class StepBatches(Dataset):
    """Item ``step`` is the whole batch of that step: rows of aligned columns plus an optional random partner.

    ``columns`` are equally long path lists indexed by the same row (a backlit image and its per-round results);
    ``partners`` is a path list sampled independently per row (the well-lit image ranked against it). All images of
    a row share one augmentation. With ``load=False`` only indices and augmentation come back (cached features).
    """

    def __init__(
        self,
        columns: Sequence[Sequence[Path]],
        *,
        partners: Sequence[Path] | None = None,
        size: int,
        batch_size: int,
        seed: int,
        stream: str,
        augment: AugmentSpec,
        rank: int = 0,
        world: int = 1,
        load: bool = True,
    ) -> None:
        lengths = {len(column) for column in columns}
        if len(lengths) != 1:
            raise ValueError(f"columns must be equally long, got lengths {sorted(lengths)}")
        self.columns = [list(column) for column in columns]
        self.partners = list(partners) if partners is not None else None
        self.size, self.batch_size, self.seed, self.stream = size, batch_size, seed, stream
        self.augment, self.rank, self.world, self.load = augment, rank, world, load

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rows = batch_rows(len(self.columns[0]), self.batch_size, step, self.seed, self.stream, self.rank, self.world)
        generator = step_generator(self.seed, f"{self.stream}/rows", step * self.world + self.rank)
        batch: dict[str, torch.Tensor] = {"rows": rows}
        if self.partners is not None:
            batch["partners"] = torch.randint(0, len(self.partners), (len(rows),), generator=generator)
        augmentation = sample_augmentation(self.augment, len(rows), generator)
        batch["symmetry"] = augmentation.symmetry
        if self.load:
            paths = [[column[int(r)] for column in self.columns] for r in rows]
            if self.partners is not None:
                paths = [[*row, self.partners[int(p)]] for row, p in zip(paths, batch["partners"], strict=True)]
            images = torch.stack([torch.stack([load_rgb(path, self.size) for path in row]) for row in paths])
            batch["images"] = apply_augmentation(images, augmentation)
        return batch
