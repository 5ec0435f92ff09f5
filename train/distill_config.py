"""The options of a distillation run (``cliplit distill``) in one torch-free dataclass.

Torch-free so that ``cliplit --help`` builds the command's flags from it without loading PyTorch: the defaults, the
help and the checks of every option live here once, and ``cliplit.train.distill`` runs what it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliplit.core.cli_settings import setting
from cliplit.core.errors import CliplitError
from cliplit.core.weights import cliplit_home


def _paths(folders: list[str]) -> tuple[str, ...]:
    return tuple(str(Path(folder)) for folder in folders)


@dataclass(frozen=True)
class DistillConfig:
    """Everything that decides what a distillation run computes (saved with the run; resume checks it)."""

    teacher: str = setting("clip-lit", "released name, .pth, cliplit train checkpoint or float-I/O .onnx")
    images: tuple[str, ...] = setting(
        (), "folders of photos to train and validate on", required=True, metavar="DIR", parse=_paths
    )
    out: str = setting("runs/rt", "run directory (checkpoints, state.pt, log.csv)", required=True)
    cache: str = setting("", "where teacher outputs are cached (default: $CLIPLIT_HOME/distill-cache)")
    val_fraction: float = setting(0.1, "share of photos held out")
    #: held-out photos are validated whole, resized so their longer side is at most this
    val_size: int = setting(768, "longer side of validation photos")
    samples_per_image: int = setting(4, "crops per training photo")
    crop: int = setting(352, "side of the training crops")
    scale_min: float = setting(0.35, "smallest rescaling of a photo")
    scale_max: float = setting(1.3, "largest rescaling of a photo")
    epochs: int = setting(30, "passes over the training crops")
    batch: int = setting(8, "crops per step")
    lr: float = setting(2e-3, "peak learning rate, one-cycle schedule")
    log_weight: float = setting(0.05, "weight of the log-light-map loss")
    widths: tuple[int, ...] = setting((16, 16, 32, 32), "student widths at 1/4, 1/8, ...", metavar="C")
    seed: int = setting(0, "seed of the crops, split and initialisation")
    device: str = setting("auto", "auto (CUDA if present), cpu, cuda, cuda:N")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch", "crop", "samples_per_image", "val_size"):
            if getattr(self, name) < 1:
                raise CliplitError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise CliplitError("--val-fraction must be between 0 and 1")
        if not 0 < self.scale_min <= self.scale_max:
            raise CliplitError("--scale-min must be positive and at most --scale-max")

    def cache_dir(self) -> Path:
        return Path(self.cache) if self.cache else cliplit_home() / "distill-cache"


@dataclass(frozen=True)
class DistillRun:
    """How ``cliplit distill`` runs, beside what it computes (not saved with the run)."""

    resume: bool = setting(
        False,
        "continue the run in --out exactly where its last epoch ended; with more --epochs than it was started "
        "for, extend it (finished or not: its learning-rate schedule is planned again for the new count)",
    )
    overwrite: bool = setting(False, "start afresh even if --out holds a run")
    threads: int | None = setting(None, "CPU threads for PyTorch (default: PyTorch's choice)")

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise CliplitError("--threads must be at least 1")
