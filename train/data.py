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
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cliplit.core.errors import CliplitError
from cliplit.core.images import is_image_path, read_image

T = TypeVar("T")

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
    """What augmentation a stage uses, drawn as the official loaders draw it (dataloader_images.py,
    dataloader_prompt_margin.py, dataloader_prompt_add.py of ZhexinLiang/CLIP-LIT): one of the 8 flip/transpose
    symmetries uniformly, then with probability ``zoom_prob`` a zoom by factors uniform in ``zoom`` (each axis its
    own), then with probability ``rotation_prob`` a rotation uniform in ±``max_rotation`` degrees.

    ``mode`` "dihedral" keeps only the symmetry (cached features stay exact), "none" nothing.
    """

    mode: str = "full"
    zoom: tuple[float, ...] = (0.7, 1.3)
    zoom_prob: float = 0.3
    rotation_prob: float = 0.3
    max_rotation: float = 90.0


@dataclass
class Augmentation:
    """Per-row parameters: symmetry (hflip * 4 + quarter turns), zoom factors (N x 2: columns, rows; 1 = no zoom)
    and rotation in degrees (0 = none)."""

    symmetry: torch.Tensor
    zoom: torch.Tensor
    angle: torch.Tensor


def sample_augmentation(spec: AugmentSpec, rows: int, generator: torch.Generator) -> Augmentation:
    symmetry = torch.randint(0, DIHEDRAL_SYMMETRIES, (rows,), generator=generator)
    zoomed = torch.rand(rows, generator=generator) < spec.zoom_prob
    low, high = spec.zoom
    factors = low + (high - low) * torch.rand(rows, 2, generator=generator)
    rotated = torch.rand(rows, generator=generator) < spec.rotation_prob
    angle = spec.max_rotation * (2.0 * torch.rand(rows, generator=generator) - 1.0)
    zoom = torch.where(zoomed[:, None], factors, torch.ones_like(factors))
    angle = torch.where(rotated, angle, torch.zeros_like(angle))
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

    The symmetry, then the zoom, then the rotation, each resampled on its own as the official loaders do (bilinear,
    borders reflected), so the reflected borders of a zoom-out are rotated like the official ones.
    """
    rows = images.shape[0]
    images = torch.stack([apply_dihedral(images[i], int(augmentation.symmetry[i])) for i in range(rows)])
    size = images.shape[-1]
    images = _warp_rows(images, (augmentation.zoom != 1.0).any(dim=1), _zoom_maps(augmentation.zoom, size))
    return _warp_rows(images, augmentation.angle != 0.0, _rotation_maps(augmentation.angle, size))


def _zoom_maps(zoom: torch.Tensor, size: int) -> torch.Tensor:
    """Output-to-input pixel maps (N x 3 x 3) of the official zoom: dst = z (src - o) + o about o = size / 2 + 0.5
    (the official centre, half a pixel right of and below the true one), z per axis (columns, rows)."""
    maps = torch.eye(3, dtype=torch.float64).repeat(len(zoom), 1, 1)
    centre = size / 2 + 0.5
    inverse = 1.0 / zoom.double()
    maps[:, 0, 0], maps[:, 1, 1] = inverse[:, 0], inverse[:, 1]
    maps[:, :2, 2] = centre * (1.0 - inverse)
    return maps


def _rotation_maps(angle: torch.Tensor, size: int) -> torch.Tensor:
    """Output-to-input pixel maps (N x 3 x 3) of OpenCV's rotation by ``angle`` degrees (counter-clockwise on screen)
    about (size // 2, size // 2), as the official ``img_rotate`` uses it."""
    radians = angle.double() * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    centre = float(size // 2)
    maps = torch.eye(3, dtype=torch.float64).repeat(len(angle), 1, 1)
    maps[:, 0, 0], maps[:, 0, 1], maps[:, 1, 0], maps[:, 1, 1] = cos, -sin, sin, cos
    maps[:, 0, 2] = centre - cos * centre + sin * centre
    maps[:, 1, 2] = centre - sin * centre - cos * centre
    return maps


def _warp_rows(images: torch.Tensor, selected: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Resample the selected rows of N x ... x S x S images through output-to-input pixel maps (bilinear, borders
    reflected about the edge pixels' outer edges, which is OpenCV's BORDER_REFLECT); other rows stay untouched."""
    if not bool(selected.any()):
        return images
    index = selected.nonzero().flatten()
    shape = images.shape
    size = shape[-1]
    # Pixel x (centres at 0 .. size-1) is the normalised coordinate (2x + 1) / size - 1 of align_corners=False.
    to_pixels = torch.tensor(
        [[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]], dtype=torch.float64
    )
    theta = (torch.linalg.inv(to_pixels) @ maps[index] @ to_pixels)[:, :2].to(images.dtype)
    flat = images[index].reshape(len(index), -1, *shape[-2:])
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    warped = F.grid_sample(flat, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    images = images.clone()
    images[index] = warped.reshape(len(index), *shape[1:])
    return images


def cycled(items: Sequence[T], length: int) -> list[T]:
    """``items`` repeated in order up to ``length``: how the official loaders balance a smaller folder."""
    return [items[i % len(items)] for i in range(length)]


def epoch_length(rows: int, batch_size: int, world: int) -> int:
    """Steps in an epoch of ``rows``: each process's share ceil(rows / world) in batches of ``batch_size``, the last
    one short (a DataLoader without drop_last, which the official code uses)."""
    return math.ceil(math.ceil(rows / world) / batch_size)


def batch_rows(n: int, batch_size: int, step: int, seed: int, stream: str, rank: int, world: int) -> torch.Tensor:
    """This rank's row indices for ``step``: each epoch is a fresh permutation (wrapped round to a multiple of the
    world size, as DistributedSampler pads), cut into global batches of ``batch_size * world`` rows, the last batch
    short; a rank takes its equal slice of each."""
    per_rank = math.ceil(n / world)
    epoch, position = divmod(step, epoch_length(n, batch_size, world))
    generator = step_generator(seed, f"{stream}/epoch", epoch)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(per_rank * world / n))])
    size = min(batch_size, per_rank - position * batch_size)
    start = position * batch_size * world + rank * size
    return order[start : start + size]


class StepBatches(Dataset):
    """Item ``step`` is the whole batch of that step: rows of aligned columns plus an optional partner.

    ``columns`` are equally long path lists indexed by the same row (a backlit image and its per-round results);
    ``partners`` is a path list as long, paired with the rows by one random permutation for the whole stream (the
    official refinement loader pairs its two shuffled lists once). All images of a row share one augmentation. With
    ``load=False`` only indices and augmentation come back (cached features).
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
        lengths = {len(column) for column in [*columns, *([partners] if partners is not None else [])]}
        if len(lengths) != 1:
            raise ValueError(f"columns and partners must be equally long, got lengths {sorted(lengths)}")
        self.columns = [list(column) for column in columns]
        self.partners = list(partners) if partners is not None else None
        self.size, self.batch_size, self.seed, self.stream = size, batch_size, seed, stream
        self.augment, self.rank, self.world, self.load = augment, rank, world, load
        self.pairing = torch.randperm(len(self.columns[0]), generator=step_generator(seed, f"{stream}/pairing", 0))

    @property
    def steps_per_epoch(self) -> int:
        return epoch_length(len(self.columns[0]), self.batch_size, self.world)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rows = batch_rows(len(self.columns[0]), self.batch_size, step, self.seed, self.stream, self.rank, self.world)
        generator = step_generator(self.seed, f"{self.stream}/rows", step * self.world + self.rank)
        batch: dict[str, torch.Tensor] = {"rows": rows}
        if self.partners is not None:
            batch["partners"] = self.pairing[rows]
        augmentation = sample_augmentation(self.augment, len(rows), generator)
        batch["symmetry"] = augmentation.symmetry
        if self.load:
            paths = [[column[int(r)] for column in self.columns] for r in rows]
            if self.partners is not None:
                paths = [[*row, self.partners[int(p)]] for row, p in zip(paths, batch["partners"], strict=True)]
            images = torch.stack([torch.stack([load_rgb(path, self.size) for path in row]) for row in paths])
            batch["images"] = apply_augmentation(images, augmentation)
        return batch
