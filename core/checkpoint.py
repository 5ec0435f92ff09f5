"""Enhancer checkpoints read without torch: the released ``.pth`` files and cliplit's own format, as NumPy arrays.

One reader serves every stage: the runtime builds its ONNX models from what it returns (:mod:`cliplit.core.graphs`),
and training's ``load_enhancer`` turns the same arrays into a network. The files are read by :mod:`cliplit.core.pth`,
which never runs code from a pickle, so no path through cliplit executes a model file.

The released files are bare state dicts saved from DataParallel (every key prefixed ``module.``). A cliplit checkpoint
is a dict that also records what is needed to rebuild the network (architecture, its config, padding variant, format
version) and where the weights came from (the SHA-256 of their source file, the training config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.core.pth import read_pth
from cliplit.core.weights import is_released_name, resolve_weights, sha256_of

FORMAT = "cliplit-enhancer"
# 2: the padding is stored as "padding" (format 1 called it "variant"); 3: "architecture" names the network class
# (absent in older files: the CLIP-LIT network), "architecture_config" its hyper-parameters
FORMAT_VERSION = 3
#: the architecture names a checkpoint records: the released CLIP-LIT network and the distilled student
TEACHER = "clip-lit"
STUDENT = "clip-lit-student-2"
ARCHITECTURES: tuple[str, ...] = (TEACHER, STUDENT)
RETIRED_STUDENTS = ("clip-lit-student",)  # student designs of earlier versions, named in the error that refuses them
#: the padding variants of the teacher: "test" (reflect, the official inference) and "train" (zeros on the outer
#: convolutions, what training optimises); a student has one padding of its own ("replicate")
TEACHER_PADDINGS: tuple[str, ...] = ("test", "train")
STUDENT_PADDING = "replicate"


class CheckpointError(CliplitError, ValueError):
    """A file is not an enhancer checkpoint this version can read."""


@dataclass
class CheckpointData:
    """An enhancer's weights and what it takes to rebuild its network, without torch.

    ``state``: parameter name (without the ``module.`` prefix) → array; ``config``: the architecture's
    hyper-parameters (a student's widths); ``padding``: the padding variant it runs with."""

    architecture: str
    config: dict[str, Any]
    padding: str
    state: dict[str, np.ndarray]
    name: str
    sha256: str
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def is_student(self) -> bool:
        return self.architecture != TEACHER


def read_checkpoint(
    weights: str | os.PathLike[str] = "clip-lit", *, padding: str | None = None, download: bool = True
) -> CheckpointData:
    """Read a released name, a released ``.pth`` or a cliplit checkpoint.

    ``padding`` overrides the teacher's padding variant (students have none); by default released weights run as the
    official test code does ("test") and cliplit checkpoints in the variant they recorded."""
    path = resolve_weights(weights, download=download)
    blob = read_pth(path)
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path} is not a CLIP-LIT checkpoint (found {type(blob).__name__}, expected a dict)")
    if blob.get("format") == FORMAT:
        if blob.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path} was written by a newer cliplit (format {blob['format_version']})")
        state = blob.get("state_dict")
        recorded_padding = blob.get("padding", blob.get("variant", "test"))  # "variant": format 1 files
        source = dict(blob.get("source", {}))
        architecture = str(blob.get("architecture", TEACHER))
        config = dict(blob.get("architecture_config", {}))
    else:
        state, recorded_padding, source, architecture, config = blob, "test", {}, TEACHER, {}
    _check_architecture(architecture, path)
    if architecture == TEACHER:
        chosen = padding or recorded_padding
        if chosen not in TEACHER_PADDINGS:
            raise CheckpointError(f"unknown padding variant {chosen!r}; expected one of {TEACHER_PADDINGS}")
    else:
        chosen = STUDENT_PADDING
    arrays = _state_arrays(state, path)
    name = str(weights) if is_released_name(weights) else Path(path).stem
    return CheckpointData(architecture, config, chosen, arrays, name, sha256_of(path), source)


def _check_architecture(architecture: str, path: Path) -> None:
    if architecture in RETIRED_STUDENTS:
        raise CheckpointError(
            f"{path} holds a {architecture!r} student, the first student design, which this cliplit no longer "
            "builds: distil it again with `cliplit distill` (the teacher's cached outputs are reused)"
        )
    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"{path} holds an unknown architecture {architecture!r} (expected {' or '.join(ARCHITECTURES)})"
        )


def _state_arrays(state: Any, path: Path) -> dict[str, np.ndarray]:
    """The state dict with the DataParallel prefix stripped, every value an array."""
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {str(key).removeprefix("module."): value for key, value in state.items()}


def is_student_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a readable cliplit checkpoint of a student (False for anything else: loading it later
    says what is wrong, with the full message)."""
    try:
        return read_checkpoint(path, download=False).is_student
    except CliplitError:
        return False
