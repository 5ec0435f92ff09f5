"""Distil any enhancer the toolkit can load into the real-time ``StudentNet``.

The teacher's light map is all the supervision needed (no CLIP, no labels), but the teacher is expensive: ~0.5 MFLOP
per pixel, seconds per photo on a CPU. So training samples are made once and cached on disk: each is a random crop
of a photo at a random scale, with random exposure, gamma and backlight (a smooth darkening of part of the frame),
quantised to 8 bits like a real frame, together with the teacher's light map *of that crop*. The crop is the whole
input the teacher saw, so the pair is exact even though the teacher's pyramid pooling is global. Training then costs
only the student, and a second run on the same photos (or a resumed one) pays nothing for the teacher.

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
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from cliplit.core.atomic import atomic_output
from cliplit.core.contract import META_MODEL_NAME
from cliplit.core.errors import CliplitError
from cliplit.core.images import is_image_path, read_image
from cliplit.core.light_map import to_uint8
from cliplit.core.metrics import psnr
from cliplit.core.weights import cliplit_home, sha256_of
from cliplit.train.checkpoint import load_enhancer, save_enhancer
from cliplit.train.network import apply_light_map
from cliplit.train.student import StudentConfig, StudentNet

LOG_FLOOR = 1e-3  # teacher light maps are clipped here before the log (its ReLU can output exact zeros)
STATE_FILE = "state.pt"
BEST = "student_best.pth"
LAST = "student_last.pth"
WARMUP_SHARE = 0.05  # of the one-cycle schedule's steps, spent raising the learning rate to its peak


@dataclass
class DistillConfig:
    """Everything that decides what a distillation run computes (saved with the run; resume checks it)."""

    teacher: str = "clip-lit"
    images: tuple[str, ...] = ()
    out: str = "runs/rt"
    cache: str = ""  # default: $CLIPLIT_HOME/distill-cache
    val_fraction: float = 0.1
    val_size: int = 768  # held-out photos are validated whole, resized so their longer side is at most this
    samples_per_image: int = 4
    crop: int = 352
    scale_min: float = 0.35
    scale_max: float = 1.3
    epochs: int = 30
    batch: int = 8
    lr: float = 2e-3
    log_weight: float = 0.05
    widths: tuple[int, ...] = StudentConfig.widths
    seed: int = 0
    device: str = "auto"

    def cache_dir(self) -> Path:
        return Path(self.cache) if self.cache else cliplit_home() / "distill-cache"


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
            return model(_to_tensor(rgb[None], device))[0, 0].cpu().numpy()

    return Teacher(checkpoint.name, checkpoint.sha256, light_map)


def _onnx_teacher(path: Path) -> Teacher:
    """ONNX Runtime directly (not cliplit.runtime: train/ imports only core); needs the float variant's light map."""
    import onnxruntime as ort

    if not path.is_file():
        raise CliplitError(f"teacher {path} not found")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if "light_map" not in outputs:
        raise CliplitError(f"teacher {path} has no light_map output: export it with --io float")
    input_name = session.get_inputs()[0].name
    name = session.get_modelmeta().custom_metadata_map.get(META_MODEL_NAME, path.stem)  # "clip-lit", not a file stem

    def light_map(rgb: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        return session.run(["light_map"], {input_name: image})[0][0, 0]

    return Teacher(name, sha256_of(path), light_map)


def _to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------------------- training


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
            image = _to_tensor(sample.rgb[None], device)
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
        image = _to_tensor(np.stack([samples[i].rgb for i in members]), run.device)
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
