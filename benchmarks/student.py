"""A distilled student against the official CLIP-LIT outputs: per-photo PSNR, and a teacher-vs-student picture.

Usage::

    python -m cliplit.benchmarks.student --photos ../shared/clip-lit/input --references ../shared/clip-lit/reference \
        [--model clip-lit-rt] [--side-by-side docs/clip-lit-rt-side-by-side.jpg --crop NAME:X,Y,W,H] \
        [--record student.pth]

``--record`` writes a copy of the ``--model`` checkpoint with the measured fidelity in its source, which its exports
carry as ``cliplit.fidelity`` metadata (that is how the shipped ``clip-lit-rt.pth`` got its figures).

The student runs through the runtime exactly as ``cliplit enhance --model clip-lit-rt`` runs it (ONNX Runtime, full
resolution, 8-bit output); each output is compared with the official output of the released network (the references
are the teacher's outputs, made by the official inference code). The side-by-side picture shows, for one crop at
100 % zoom, the input, the official output, the student's output and their difference amplified 8x.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cliplit.core.cli_settings import SettingsCli, from_args, setting
from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image, write_image
from cliplit.core.metrics import psnr
from cliplit.runtime.enhancer import Enhancer

DIFF_GAIN = 8  # the difference panel shows |student - official| x 8, so one 8-bit level is visible


def fidelity(enhancer: Enhancer, photos: Path, references: Path) -> dict[str, float]:
    """PSNR (dB) of the enhancer's output against ``references/<stem>.png`` for every ``photos/*.jpg``."""
    paths = sorted(photos.glob("*.jpg"))
    if not paths:
        raise CliplitError(f"--photos {photos}: no .jpg photos there (the six test photos: ../shared/clip-lit/input)")
    scores = {}
    for path in paths:
        reference = references / f"{path.stem}.png"
        if not reference.is_file():  # a silently shorter evaluation would look better
            raise CliplitError(f"--references {references}: no official output {reference.name} for {path.name}")
        scores[path.stem] = psnr(enhancer.enhance(read_image(path)), read_image(reference))
    return scores


def markdown_table(scores: dict[str, float]) -> str:
    rows = ["| photo | PSNR vs official output (dB) |", "| --- | --- |"]
    rows += [f"| {name} | {value:.2f} |" for name, value in scores.items()]
    values = list(scores.values())
    rows.append(f"| **mean / worst** | **{np.mean(values):.2f} / {np.min(values):.2f}** |")
    return "\n".join(rows)


def side_by_side(image: np.ndarray, official: np.ndarray, student: np.ndarray, box: tuple[int, int, int, int]):
    """Input | official | student | |difference| x 8 for the crop ``box`` (x, y, w, h), as one BGR image."""
    x, y, w, h = box
    panels = [frame[y : y + h, x : x + w] for frame in (image, official, student)]
    difference = np.abs(official[y : y + h, x : x + w].astype(np.int16) - student[y : y + h, x : x + w])
    panels.append(np.clip(difference * DIFF_GAIN, 0, 255).astype(np.uint8))
    gap = np.full((h, 4, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    labels = ("input", "official CLIP-LIT", "clip-lit-rt", f"|difference| x {DIFF_GAIN}")
    banner = np.full((22, row.shape[1], 3), 255, np.uint8)
    for index, label in enumerate(labels):
        cv2.putText(banner, label, (index * (w + 4) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return np.concatenate([banner, row], axis=0)


def record_fidelity(model: str, scores: dict[str, float], target: Path) -> Path:
    """A copy of checkpoint ``model`` at ``target`` (never overwritten) whose source records ``scores``."""
    from cliplit.train.checkpoint import load_enhancer, save_enhancer

    checkpoint = load_enhancer(model)
    fidelity = {
        "measured_against": "official CLIP-LIT outputs of the six photos of the official repository (input/*.jpg), "
        "full resolution, 8-bit",
        "mean_db": round(float(np.mean(list(scores.values()))), 2),
        "worst_db": round(float(np.min(list(scores.values()))), 2),
        "per_photo_db": {name: round(value, 2) for name, value in scores.items()},
    }
    return save_enhancer(checkpoint.model, target, source={**checkpoint.source, "fidelity": fidelity})


@dataclass(frozen=True)
class StudentBenchSettings:
    """The student to measure, the photos and official outputs to measure it on, and what to write."""

    photos: Path | None = setting(None, "folder of test photos", required=True)  # noqa: RUF009 (setting makes a field)
    references: Path | None = setting(  # noqa: RUF009 (setting makes a field)
        None, "folder of the official outputs, NAME.png", required=True
    )
    model: str = setting("clip-lit-rt", "the student: a released name, .pth or .onnx")
    side_by_side: Path | None = setting(None, "write the comparison picture here")  # noqa: RUF009 (a field)
    crop: str | None = setting(None, "NAME:X,Y,W,H, the photo and crop of the picture")
    record: Path | None = setting(None, "write the checkpoint with its fidelity here")  # noqa: RUF009 (a field)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    SettingsCli(StudentBenchSettings).add_to(parser)
    settings = from_args(StudentBenchSettings, parser.parse_args(argv))
    return run_command(lambda: _run(settings), "python -m cliplit.benchmarks.student", "bench")


def _run(settings: StudentBenchSettings) -> int:
    enhancer = Enhancer.open(settings.model, "onnxruntime")
    scores = fidelity(enhancer, settings.photos, settings.references)
    print(markdown_table(scores))
    if settings.record:
        print(f"wrote {record_fidelity(settings.model, scores, settings.record)}")
    if settings.side_by_side and settings.crop:
        name, numbers = settings.crop.split(":")
        box = tuple(int(v) for v in numbers.split(","))
        image = read_image(settings.photos / f"{name}.jpg")
        official = read_image(settings.references / f"{name}.png")
        picture = side_by_side(image, official, enhancer.enhance(image), box)  # type: ignore[arg-type]
        write_image(settings.side_by_side, picture, overwrite=True)
        print(f"wrote {settings.side_by_side}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
