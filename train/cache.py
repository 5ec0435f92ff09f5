"""Caches of what is frozen during a stage, so no iteration recomputes it.

The CLIP image tower never trains: the features of an un-augmented image, or of one of its 8 flip/quarter-turn
symmetries, are fixed. Stages whose augmentation is limited to those ("dihedral" or "none") look features up in a table
computed once, and an iteration only runs the text tower. The tables are a pure function of the images and the
frozen model, so a resumed run rebuilds the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch import nn

from cliplit.train.data import apply_dihedral, load_rgb

CHUNK = 32  # images per forward pass while building a table


@torch.no_grad()
def image_feature_table(
    encoder: nn.Module,
    paths: Sequence[Path],
    *,
    size: int,
    symmetries: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> torch.Tensor:
    """Features (len(paths) x symmetries x D) of each image at ``size`` under dihedral symmetries 0..symmetries-1."""
    rows = []
    for start in range(0, len(paths), CHUNK):
        images = torch.stack([load_rgb(path, size) for path in paths[start : start + CHUNK]]).to(device)
        with autocast():
            per_symmetry = [encoder(apply_dihedral(images, s)).float() for s in range(symmetries)]
        rows.append(torch.stack(per_symmetry, dim=1))
    return torch.cat(rows)


def lookup(table: torch.Tensor, rows: torch.Tensor, symmetry: torch.Tensor) -> torch.Tensor:
    """The cached features of (row, symmetry) pairs (N x D)."""
    return table[rows.to(table.device), symmetry.to(table.device)]


class FeatureTables:
    """The cached features of the training folders (computed once per run) and of per-round results (once per round).

    ``symmetries`` is 8 when the prompt stages augment with the dihedral symmetries only, 1 when they do not augment.
    """

    def __init__(
        self,
        encoder: nn.Module,
        folders: dict[str, Sequence[Path]],
        *,
        size: int,
        symmetries: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> None:
        self.encoder, self.folders = encoder, folders
        self.options = {"size": size, "symmetries": symmetries, "device": device, "autocast": autocast}
        self._folders: dict[str, torch.Tensor] = {}
        self._results: dict[int, torch.Tensor] = {}

    def folder(self, name: str) -> torch.Tensor:
        """The table of a training folder, by the name it was given."""
        if name not in self._folders:
            self._folders[name] = image_feature_table(self.encoder, self.folders[name], **self.options)
        return self._folders[name]

    def results(self, round_index: int, paths: Sequence[Path]) -> torch.Tensor:
        """The table of one round's results; rounds older than the one before are dropped (never ranked again)."""
        if round_index not in self._results:
            self._results[round_index] = image_feature_table(self.encoder, paths, **self.options)
        self._results = {r: t for r, t in self._results.items() if r >= round_index - 1}
        return self._results[round_index]
