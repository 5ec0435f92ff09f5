"""Enhancement-network checkpoints: read the released ``.pth`` and cliplit's own format, write cliplit's format.

The released files are bare state dicts saved from DataParallel (every key prefixed ``module.``). A cliplit checkpoint
is a dict that also records what is needed to rebuild the network (architecture, padding variant, format version) and
where the weights came from (the SHA-256 of their source file, the training config), so exports can name their origin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError
from cliplit.core.weights import is_released_name, resolve_weights, sha256_of
from cliplit.train.network import PADDINGS, LightMapNet
from cliplit.train.student import ARCHITECTURE as STUDENT
from cliplit.train.student import StudentConfig, StudentNet

FORMAT = "cliplit-enhancer"
# 2: the padding is stored as "padding" (format 1 called it "variant"); 3: "architecture" names the network class
# (absent in older files: the CLIP-LIT network), "architecture_config" its hyper-parameters
FORMAT_VERSION = 3
TEACHER = "clip-lit"  # the architecture name of LightMapNet
RETIRED_STUDENTS = ("clip-lit-student",)  # student designs of earlier versions, named in the error that refuses them


class CheckpointError(CliplitError, ValueError):
    """A file is not an enhancer checkpoint this version can read."""


@dataclass
class EnhancerCheckpoint:
    """A loaded enhancer with its provenance."""

    model: LightMapNet | StudentNet
    name: str
    sha256: str
    source: dict[str, Any] = field(default_factory=dict)


def load_enhancer(
    weights: str | os.PathLike[str] = "clip-lit", *, padding: str | None = None, download: bool = True
) -> EnhancerCheckpoint:
    """Build the enhancer from a released name, a released ``.pth`` or a cliplit checkpoint, in eval mode.

    ``padding`` overrides the padding variant of the CLIP-LIT network (students have none); by default released
    weights run as the official test code does ("test") and cliplit checkpoints in the variant they recorded.
    """
    path = resolve_weights(weights, download=download)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (KeyError, EOFError, UnpicklingError) on junk
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({error})") from error
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path} is not a CLIP-LIT checkpoint (found {type(blob).__name__}, expected a dict)")
    if blob.get("format") == FORMAT:
        if blob.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path} was written by a newer cliplit (format {blob['format_version']})")
        state = blob["state_dict"]
        recorded_padding = blob.get("padding", blob.get("variant", "test"))  # "variant": format 1 files
        source = dict(blob.get("source", {}))
        architecture = blob.get("architecture", TEACHER)
        model = _build(architecture, blob.get("architecture_config", {}), padding or recorded_padding, path)
    else:
        state = blob
        source = {}
        model = LightMapNet(padding or "test")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not hold CLIP-LIT enhancer weights (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    model.eval()
    name = str(weights) if is_released_name(weights) else Path(path).stem
    return EnhancerCheckpoint(model=model, name=name, sha256=sha256_of(path), source=source)


def _build(architecture: str, config: dict[str, Any], padding: str, path: Path) -> LightMapNet | StudentNet:
    if architecture == TEACHER:
        return LightMapNet(padding)
    if architecture == STUDENT:
        try:
            return StudentNet(StudentConfig.from_dict(config))
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from error
    if architecture in RETIRED_STUDENTS:
        raise CheckpointError(
            f"{path} holds a {architecture!r} student, the first student design, which this cliplit no longer "
            "builds: distil it again with `cliplit distill` (the teacher's cached outputs are reused)"
        )
    raise CheckpointError(f"{path} holds an unknown architecture {architecture!r} (expected {TEACHER} or {STUDENT})")


def save_enhancer(
    model: LightMapNet | StudentNet,
    path: str | os.PathLike[str],
    *,
    padding: str = "test",
    source: dict[str, Any] | None = None,
) -> Path:
    """Write a cliplit checkpoint atomically (temporary file, then rename).

    ``padding`` is the padding variant to run the weights with; CLIP-LIT trains with zero outer padding and runs with
    reflect padding, so trained weights are saved as "test" unless asked otherwise. A ``StudentNet`` has no padding
    variant; its architecture and widths are recorded instead, so ``load_enhancer`` rebuilds the same network.
    """
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding variant {padding!r}; expected one of {PADDINGS}")
    path = Path(path)
    is_student = isinstance(model, StudentNet)
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": STUDENT if is_student else TEACHER,
        "architecture_config": model.config.to_dict() if is_student else {},
        "padding": padding,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "source": source or {},
    }
    with atomic_output(path) as tmp:
        torch.save(blob, tmp)
    return path
