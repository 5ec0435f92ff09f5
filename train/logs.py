"""Training logs: a CSV of iterations, TensorBoard scalars when tensorboard is installed, and a JSON summary.

The CSV is append-only while training. A resumed run first drops the rows logged after its checkpoint (they are
about to be recomputed), so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from cliplit.core.atomic import atomic_output

COLUMNS = (
    "step",
    "stage",
    "round",
    "iteration",
    "loss",
    "running_loss",
    "clip_loss",
    "identity_loss",
    "rank_loss",
    "accuracy",
    "psnr",
    "its_per_s",
    "elapsed_s",
)


class RunLog:
    """Writes ``log.csv`` (and TensorBoard events under ``tensorboard/``) in a run directory."""

    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        self.csv_path = run_dir / "log.csv"
        if resume_step is not None and self.csv_path.is_file():
            self._truncate_after(resume_step)
        new = not self.csv_path.is_file()
        self._file = open(self.csv_path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - open for the run
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()
        purge = None if resume_step is None else resume_step + 1
        self._tensorboard = _tensorboard_writer(run_dir / "tensorboard", purge_step=purge)

    def _truncate_after(self, step: int) -> None:
        with open(self.csv_path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
        with atomic_output(self.csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({key: _format(value) for key, value in row.items()})
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in row.items():
                if key not in ("step", "stage", "round", "iteration") and isinstance(value, int | float):
                    self._tensorboard.add_scalar(f"{row['stage']}/{key}", value, row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _tensorboard_writer(folder: Path, purge_step: int | None) -> Any:
    """A SummaryWriter, or None when the tensorboard package is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=os.fspath(folder), purge_step=purge_step)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def describe(record: dict[str, Any]) -> str:
    """One line about a finished phase, printed after it."""
    text = f"{record['stage']} {record['round']}: {record['iterations']} iterations"
    if record["its_per_s"]:
        text += f" in {record['seconds']:.1f} s ({record['its_per_s']:.2f} it/s)"
    if record.get("best_loss") is not None:
        text += f", best running loss {record['best_loss']:.4g}"
    if record.get("accuracy") is not None:
        text += f", prompt accuracy {100 * record['accuracy']:.1f}%"
    return text


def summarize(phases: list[dict[str, Any]], **run: Any) -> dict[str, Any]:
    """``summary.json``: the run's facts (``run``: finished, step, accuracy, device, ...), per-stage totals and
    iterations/s, and every phase record."""
    stages: dict[str, dict[str, Any]] = {}
    for record in phases:
        entry = stages.setdefault(record["stage"], {"iterations": 0, "seconds": 0.0})
        entry["iterations"] += record["iterations"]
        entry["seconds"] += record["seconds"]
    for entry in stages.values():
        entry["its_per_s"] = round(entry["iterations"] / entry["seconds"], 3) if entry["seconds"] > 0 else None
    return {**run, "stages": stages, "phases": phases}
