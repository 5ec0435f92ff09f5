"""Distil any enhancer the toolkit can load into the real-time ``StudentNet``: the training run.

The teacher's light map is all the supervision needed (no CLIP, no labels). The samples (crops with the teacher's
light maps, made once and cached on disk: :mod:`cliplit.train.distill_data`) make training cost only the student,
and a second run on the same photos (or a resumed one) pays nothing for the teacher.

Loss: mean squared error of the enhanced image (what users see, and what PSNR measures) plus ``log_weight`` times the
mean squared error of the log light map. An error e in log L changes the output y = x / L by about y * e, so the image
term alone weighs each pixel by y^2 and all but ignores dark outputs, where the division amplifies any error in L and
noise lives; the log term gives every pixel a floor weight (that of an output of sqrt(log_weight)) and keeps the
student right where the clamp at 1 hides the light map from the image term.

Resuming is exact: all randomness is in the cached samples (seeded per sample) and in the per-epoch shuffle (seeded
per epoch), and the run state (weights, optimiser, scheduler, history) is written atomically at the end of every
epoch, so a resumed run follows the very same trajectory as an uninterrupted one. A resume with more ``--epochs`` than
the run was started for extends it instead (finished or not): the one-cycle schedule is planned again for the new
count and taken up at the step the run had reached, so the run still ends annealed (see :func:`one_cycle`); that
is the one resume that is not exact, as no uninterrupted run of either length took that path.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError
from cliplit.core.light_map import to_uint8
from cliplit.core.metrics import psnr
from cliplit.train.checkpoint import save_enhancer
from cliplit.train.distill_config import DistillConfig
from cliplit.train.distill_data import Sample, build_samples, list_images, load_teacher, split_images, to_tensor
from cliplit.train.network import apply_light_map
from cliplit.train.student import StudentConfig, StudentNet

LOG_FLOOR = 1e-3  # teacher light maps are clipped here before the log (its ReLU can output exact zeros)
STATE_FILE = "state.pt"
BEST = "student_best.pth"
LAST = "student_last.pth"
WARMUP_SHARE = 0.05  # of the one-cycle schedule's steps, spent raising the learning rate to its peak


def distill_loss(
    student: StudentNet, image: torch.Tensor, teacher_map: torch.Tensor, log_weight: float
) -> torch.Tensor:
    """Image MSE of the enhanced outputs plus ``log_weight`` times the MSE of the log light maps (see module doc)."""
    log_student = student.log_light_map(image)
    enhanced = apply_light_map(image, torch.exp(log_student))
    target = apply_light_map(image, teacher_map)
    image_term = torch.mean((enhanced - target) ** 2)
    log_term = torch.mean((log_student - torch.log(torch.clamp(teacher_map, min=LOG_FLOOR))) ** 2)
    return image_term + log_weight * log_term


def validate(student: StudentNet, samples: list[Sample], device: torch.device) -> list[float]:
    """PSNR (dB, 8-bit outputs) of the student's enhanced image against the teacher's, per held-out photo."""
    student.eval()
    scores = []
    with torch.no_grad():
        for sample in samples:
            image = to_tensor(sample.rgb[None], device)
            ours = apply_light_map(image, student(image))
            theirs = apply_light_map(image, torch.from_numpy(sample.light_map)[None, None].to(device))
            scores.append(psnr(_to_uint8(ours), _to_uint8(theirs)))
    student.train()
    return scores


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return to_uint8(image.detach().float().cpu().numpy())


@dataclass
class DistillOutcome:
    run_dir: Path
    epochs_done: int
    best_psnr: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> Path:
        return self.run_dir / BEST


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CliplitError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


class Run:
    """The state of one distillation: model, optimiser, schedule and history, saved and restored as a whole."""

    def __init__(self, config: DistillConfig, steps_per_epoch: int, device: torch.device) -> None:
        torch.manual_seed(config.seed)
        self.config = config
        self.device = device
        architecture = StudentConfig(widths=tuple(config.widths))
        self.student = StudentNet(architecture).to(device)
        self.optimiser = torch.optim.Adam(self.student.parameters(), lr=config.lr)
        self.total_steps = max(1, config.epochs * steps_per_epoch)
        self.schedule = one_cycle(self.optimiser, config.lr, self.total_steps)
        self.epoch = 0
        self.best_psnr = -math.inf
        self.history: list[dict[str, Any]] = []

    def state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "student": self.student.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
            "best_psnr": self.best_psnr,
            "history": self.history,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved state; with more epochs than it was saved with, the schedule is planned again for
        them and taken up at the saved step (an extended run), otherwise it is the saved one, exactly."""
        self.student.load_state_dict(state["student"])
        self.optimiser.load_state_dict(state["optimiser"])
        if int(state["config"]["epochs"]) == self.config.epochs:
            self.schedule.load_state_dict(state["schedule"])
        else:
            steps_taken = int(state["schedule"]["last_epoch"])  # torch counts steps in last_epoch
            self.schedule = one_cycle(self.optimiser, self.config.lr, self.total_steps, steps_taken)
        self.epoch = int(state["epoch"])
        self.best_psnr = float(state["best_psnr"])
        self.history = list(state["history"])


def one_cycle(
    optimiser: torch.optim.Optimizer, lr: float, total: int, steps_taken: int = 0
) -> torch.optim.lr_scheduler.OneCycleLR:
    """The one-cycle schedule over ``total`` steps, ``steps_taken`` of them already taken (an extended run's).

    torch ends the warm-up at step ``share * total - 1`` and divides by the warm-up's length, so where the warm-up is
    exactly one step (5 % of 20 steps: 5 epochs of 4 batches, 4 of 5, ...) it computes 0 / 0 at step 0 and raises
    ZeroDivisionError, for a fresh run as for a resumed one. There a hair more makes that step the warm-up's start,
    as it is for 21 to 39 steps; every other total keeps 5 %, so no other run's trajectory changes.
    """
    share = WARMUP_SHARE if WARMUP_SHARE * total != 1 else 1.01 / total  # the very product torch computes
    return torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=lr,
        total_steps=total,
        pct_start=share,
        anneal_strategy="cos",
        # torch's constructor takes a step itself; from -1 (fresh) it sets up the optimiser's groups, from any other
        # count it takes the ones the restored optimiser holds
        last_epoch=steps_taken - 1,
    )


def _check_resumable(config: DistillConfig, saved: dict[str, Any], path: Path) -> None:
    """Only the device and the epoch count may change (the epochs only upwards, see :func:`_check_epochs`): every
    other option shapes what each epoch computes."""
    mine, theirs = json.loads(json.dumps(asdict(config))), json.loads(json.dumps(saved))
    differing = sorted(k for k in mine if k not in ("device", "epochs") and mine[k] != theirs.get(k))
    if differing:
        raise CliplitError(f"cannot resume {path}: options differ from the saved run ({', '.join(differing)})")


def _check_epochs(config: DistillConfig, saved: dict[str, Any], run_dir: Path) -> None:
    """A resume either continues the run as started (same ``--epochs``) or extends it (more); fewer would cut a
    schedule planned to anneal at the end, and on a finished run the same count would do nothing. Refused with the
    count to pass, since ``--epochs`` has a default a resume can easily forget to override."""
    done, planned = int(saved["epoch"]), int(saved["config"]["epochs"])
    if done >= planned and config.epochs <= done:
        raise CliplitError(
            f"nothing to resume: the run in {run_dir} finished all {done} epochs; pass --epochs M > {done} to train "
            "further"
        )
    if config.epochs < planned:
        raise CliplitError(
            f"cannot resume {run_dir} with --epochs {config.epochs}: it is planned for {planned} epochs and has done "
            f"{done}; pass --epochs {planned} to finish it, or more to extend it"
        )


def _load_resumable(config: DistillConfig, state_path: Path, device: torch.device) -> dict[str, Any]:
    """The saved state of the run in ``out``, checked before any teacher work (a refusal costs nothing)."""
    if not state_path.is_file():
        raise CliplitError(f"cannot resume: {state_path} not found (was {state_path.parent} made by cliplit distill?)")
    saved = torch.load(state_path, map_location=device, weights_only=True)
    _check_resumable(config, saved["config"], state_path)
    _check_epochs(config, saved, state_path.parent)
    return saved


def distill(config: DistillConfig, *, resume: bool = False, overwrite: bool = False) -> DistillOutcome:
    """Run (or continue) a distillation; writes student_best.pth, student_last.pth, state.pt and log.csv in ``out``."""
    run_dir = Path(config.out)
    state_path = run_dir / STATE_FILE
    if not resume and state_path.exists() and not overwrite:
        raise CliplitError(f"{run_dir} already holds a distillation run: pass --resume to continue it or --overwrite")
    device = pick_device(config.device)
    saved = _load_resumable(config, state_path, device) if resume else None
    teacher = load_teacher(config.teacher, device)
    train_photos, val_photos = split_images(list_images(config.images), config.val_fraction, config.seed)
    train_set = build_samples(config, teacher, train_photos, validation=False)
    val_set = build_samples(config, teacher, val_photos, validation=True)
    batches = _batches_by_size(train_set, config.batch)
    run = Run(config, len(batches), device)
    if saved is not None:
        if config.epochs != saved["config"]["epochs"]:
            planned, done = saved["config"]["epochs"], saved["epoch"]
            print(
                f"extending the run in {run_dir} from {planned} to {config.epochs} epochs: its learning-rate "
                f"schedule is planned again for {config.epochs} epochs and taken up after epoch {done}",
                flush=True,
            )
        run.restore(saved)
    run_dir.mkdir(parents=True, exist_ok=True)
    source = {
        "distilled_from": teacher.name,
        "teacher_sha256": teacher.sha256,
        "train_photos": [p.name for p in train_photos],
        "val_photos": [p.name for p in val_photos],
        "config": asdict(config),
    }
    while run.epoch < config.epochs:
        loss = _train_epoch(run, train_set, batches)
        scores = validate(run.student, val_set, device)
        _finish_epoch(run, run_dir, loss, scores, source)
    return DistillOutcome(run_dir, run.epoch, run.best_psnr, run.history)


def _batches_by_size(samples: list[Sample], batch: int) -> list[list[int]]:
    """Index batches of equal-sized samples (crops of small photos can be smaller than --crop), in a fixed order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.rgb.shape[:2], []).append(index)
    return [members[i : i + batch] for members in groups.values() for i in range(0, len(members), batch)]


def _train_epoch(run: Run, samples: list[Sample], batches: list[list[int]]) -> float:
    generator = torch.Generator().manual_seed(run.config.seed * 100_003 + run.epoch)
    order = torch.randperm(len(batches), generator=generator).tolist()
    run.student.train()
    total = 0.0
    progress = tqdm(order, desc=f"epoch {run.epoch + 1}/{run.config.epochs}", unit="batch", dynamic_ncols=True)
    for position in progress:
        members = batches[position]
        image = to_tensor(np.stack([samples[i].rgb for i in members]), run.device)
        teacher_map = torch.from_numpy(np.stack([samples[i].light_map for i in members])[:, None]).to(run.device)
        loss = distill_loss(run.student, image, teacher_map, run.config.log_weight)
        run.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        run.optimiser.step()
        run.schedule.step()
        total += loss.item()
        progress.set_postfix(loss=f"{loss.item():.2e}")
    return total / max(1, len(order))


def _finish_epoch(run: Run, run_dir: Path, loss: float, scores: list[float], source: dict[str, Any]) -> None:
    run.epoch += 1
    record = {
        "epoch": run.epoch,
        "loss": loss,
        "val_psnr_mean": float(np.mean(scores)),
        "val_psnr_min": float(np.min(scores)),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    run.history.append(record)
    print(
        f"epoch {run.epoch}: loss {loss:.3e}, validation PSNR vs teacher {record['val_psnr_mean']:.2f} dB mean, "
        f"{record['val_psnr_min']:.2f} dB worst",
        flush=True,
    )
    source = {**source, "val_psnr_vs_teacher": record}
    save_enhancer(run.student, run_dir / LAST, source=source)
    if record["val_psnr_mean"] > run.best_psnr:
        run.best_psnr = record["val_psnr_mean"]
        save_enhancer(run.student, run_dir / BEST, source=source)
    with atomic_output(run_dir / STATE_FILE, overwrite=True) as tmp:
        torch.save(run.state(), tmp)
    _write_log(run_dir / "log.csv", run.history)


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
