"""Distil a teacher (by default the released CLIP-LIT) into the real-time student network, on folders of photos.

Training crops are cut from the photos at random scales with random exposure, gamma and backlight; the teacher's light
maps of them are computed once and cached (--cache), so reruns and resumed runs pay only for the student. Each epoch
ends with the PSNR of the student's output against the teacher's on held-out photos; the run directory receives
student_best.pth (best validation PSNR), student_last.pth, state.pt (for --resume) and log.csv. The checkpoints
load wherever weights are accepted: cliplit enhance --model, export-engine --weights. See docs/distill.md.

--resume with a larger --epochs extends a run, finished or not. Resuming a finished run without one is refused
with the count it reached, and so are fewer epochs than a run is planned for: --epochs has a default, which would
otherwise silently cut a longer run short.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cliplit.core.errors import CliplitError

_DEFAULTS = {  # kept here rather than imported so `cliplit --help` does not load torch; a test checks they agree
    "teacher": "clip-lit",
    "val_fraction": 0.1,
    "val_size": 768,
    "samples_per_image": 4,
    "crop": 352,
    "scale_min": 0.35,
    "scale_max": 1.3,
    "epochs": 30,
    "batch": 8,
    "lr": 2e-3,
    "log_weight": 0.05,
    "widths": (16, 16, 32, 32),
    "seed": 0,
    "device": "auto",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    add = parser.add_argument
    add("--teacher", default=d["teacher"], help="released name, .pth, cliplit train checkpoint or float-I/O .onnx")
    add("--images", nargs="+", required=True, metavar="DIR", help="folders of photos to train and validate on")
    add("--out", required=True, type=Path, help="run directory (checkpoints, state.pt, log.csv)")
    add("--cache", default="", help="where teacher outputs are cached (default: $CLIPLIT_HOME/distill-cache)")
    add(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly where its last epoch ended; with more --epochs than it was started "
        "for, extend it (finished or not: its learning-rate schedule is planned again for the new count)",
    )
    add("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    add("--epochs", type=int, default=d["epochs"], help=f"passes over the training crops (default {d['epochs']})")
    add("--batch", type=int, default=d["batch"], help=f"crops per step (default {d['batch']})")
    add("--lr", type=float, default=d["lr"], help=f"peak learning rate, one-cycle schedule (default {d['lr']})")
    add("--crop", type=int, default=d["crop"], help=f"side of the training crops (default {d['crop']})")
    add("--samples-per-image", type=int, default=d["samples_per_image"], help="crops per training photo (default 4)")
    add("--scale-min", type=float, default=d["scale_min"], help="smallest rescaling of a photo (default 0.35)")
    add("--scale-max", type=float, default=d["scale_max"], help="largest rescaling of a photo (default 1.3)")
    add("--val-fraction", type=float, default=d["val_fraction"], help="share of photos held out (default 0.1)")
    add("--val-size", type=int, default=d["val_size"], help="longer side of validation photos (default 768)")
    add("--log-weight", type=float, default=d["log_weight"], help="weight of the log-light-map loss (default 0.05)")
    widths = " ".join(map(str, d["widths"]))
    add(
        "--widths",
        type=int,
        nargs="+",
        default=list(d["widths"]),
        metavar="C",
        help=f"student widths at 1/4, 1/8, ... (default {widths})",
    )
    add("--seed", type=int, default=d["seed"], help="seed of the crops, split and initialisation (default 0)")
    add("--device", default=d["device"], help="auto (CUDA if present), cpu, cuda, cuda:N (default auto)")
    add("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)")


def run(args: argparse.Namespace) -> int:
    import torch

    from cliplit.train.distill import DistillConfig, distill
    from cliplit.train.student import StudentConfig

    if args.threads is not None:
        if args.threads < 1:
            raise CliplitError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    for name in ("epochs", "batch", "crop", "samples_per_image", "val_size"):
        if getattr(args, name) < 1:
            raise CliplitError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.val_fraction < 1:
        raise CliplitError("--val-fraction must be between 0 and 1")
    if not 0 < args.scale_min <= args.scale_max:
        raise CliplitError("--scale-min must be positive and at most --scale-max")
    try:
        StudentConfig(widths=tuple(args.widths))
    except ValueError as error:
        raise CliplitError(f"--widths: {error}") from error
    config = DistillConfig(
        teacher=args.teacher,
        images=tuple(str(Path(p)) for p in args.images),
        out=str(args.out),
        cache=args.cache,
        val_fraction=args.val_fraction,
        val_size=args.val_size,
        samples_per_image=args.samples_per_image,
        crop=args.crop,
        scale_min=args.scale_min,
        scale_max=args.scale_max,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        log_weight=args.log_weight,
        widths=tuple(args.widths),
        seed=args.seed,
        device=args.device,
    )
    outcome = distill(config, resume=args.resume, overwrite=args.overwrite)
    print(
        f"distillation finished after {outcome.epochs_done} epochs; best validation PSNR vs the teacher "
        f"{outcome.best_psnr:.2f} dB; student in {outcome.best}"
    )
    return 0
