"""One phase of a run: a stage's steps from the current iteration to its (possibly extended) end.

The runner keeps the schedule position in ``run.progress`` up to date after every step, logs every ``--log-every``
iterations, checkpoints every ``--checkpoint-every`` and at the phase's end, and stops early (resumably) at
``--max-steps``. Batches come from a DataLoader over the stage's ``StepBatches`` starting at the current iteration,
so a resumed phase gets the very batches the uninterrupted one would have.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cliplit.train.logs import describe, summarize, write_json
from cliplit.train.run_state import RunState
from cliplit.train.schedule import close_phase, open_epoch_if_needed
from cliplit.train.stage import OFFICIAL_WINDOW, Stage


def run_phase(run: RunState, stage: Stage) -> bool:
    """Run the rest of one phase and finish it; False when ``--max-steps`` stopped it first."""
    p, config = run.progress, run.config
    if p.target == 0:
        p.start_phase(stage.iterations())
    step_batches = stage.prepare()
    loader = DataLoader(
        step_batches,
        batch_size=None,
        sampler=itertools.count(p.iteration),
        num_workers=config.num_workers,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG (resume exactness)
        persistent_workers=False,
        # workers start from a fork server, not a fork of this process: forking a process whose native libraries
        # run threads (ONNX Runtime, OpenVINO's TBB, OpenMP, gRPC) is unsafe, and crashed whole test runs
        multiprocessing_context="forkserver" if config.num_workers > 0 else None,
    )
    batches = iter(loader)
    bar = tqdm(
        total=p.target,
        initial=p.iteration,
        desc=stage.label,
        disable=not (config.progress and run.ctx.is_main),
        dynamic_ncols=True,
        file=sys.stderr,
    )
    last_log = (p.iteration, p.phase_seconds)
    try:
        while p.iteration < p.target:
            if run.should_stop():
                return False
            if not open_epoch_if_needed(config, p, step_batches.steps_per_epoch):
                break  # the epoch budget ends inside this phase: it ends here, as the official run does
            started = time.perf_counter()
            metrics = stage.step(next(batches))
            loss = _count_step(run, metrics, time.perf_counter() - started)
            stage.after_step(metrics)
            bar.total = p.target
            bar.update(1)
            bar.set_postfix(loss=f"{p.running_loss:.4g}", refresh=False)
            if p.iteration % config.log_every == 0 or p.iteration == p.target:
                last_log = _log_row(run, stage, loss, metrics, last_log)
            if p.step % config.checkpoint_every == 0:
                run.save_checkpoint()
    finally:
        bar.close()
        del batches  # shuts the loader's workers down
    _finish_phase(run, stage)
    return True


def _count_step(run: RunState, metrics: dict[str, float], seconds: float) -> float:
    """Advance the schedule position by one step; the loss averaged over ranks (it steers decisions)."""
    p = run.progress
    p.phase_seconds += seconds
    p.iteration += 1
    p.step += 1
    p.epoch_steps += 1
    loss = run.ctx.mean(metrics["loss"])
    p.window = [*p.window, loss][-run.config.running_loss_window :]
    p.recent_losses = [*p.recent_losses, loss][-OFFICIAL_WINDOW:]
    return loss


def _finish_phase(run: RunState, stage: Stage) -> None:
    """Let the stage write its outputs, record the phase, move to the next and checkpoint there."""
    p = run.progress
    seconds = round(p.phase_seconds, 3)  # the rate is of the seconds reported, so stage totals agree with phases
    record: dict[str, Any] = {
        "stage": stage.name,
        "round": stage.round_index,
        "iterations": p.iteration,
        "extensions": p.extensions,
        "seconds": seconds,
        "its_per_s": round(p.iteration / seconds, 3) if seconds > 0 else None,
        "running_loss": p.running_loss if p.window else None,
        "truncated": p.iteration < p.target,
    }
    stage.finish(record)
    p.phases.append(record)
    run.say(describe(record))
    if run.ctx.is_main:
        write_json(run.run_dir / "summary.json", run_summary(run, finished=False))
    close_phase(run.config, p, stage.name)
    p.phase += 1
    p.target = 0
    run.save_checkpoint()


def run_summary(run: RunState, *, finished: bool) -> dict[str, Any]:
    """What ``summary.json`` says about the run so far."""
    p = run.progress
    facts = {"finished": finished, "step": p.step, "epochs": p.epochs, "accuracy": p.accuracy}
    facts["device"] = str(run.device)
    facts.update(world_size=run.ctx.world, amp=run.precision.enabled)
    return summarize(p.phases, **facts)


def _log_row(
    run: RunState, stage: Stage, loss: float, metrics: dict[str, float], last: tuple[int, float]
) -> tuple[int, float]:
    """Write one log row; returns the (iteration, seconds) it was written at, for the next row's iterations/s."""
    p = run.progress
    elapsed = p.phase_seconds - last[1]
    if run.log is not None:
        row = {
            "step": p.step,
            "stage": stage.name,
            "round": stage.round_index,
            "iteration": p.iteration,
            "loss": loss,
            "running_loss": p.running_loss,
            "its_per_s": (p.iteration - last[0]) / elapsed if elapsed > 0 else None,
            "elapsed_s": p.phase_seconds,
            **{key: value for key, value in metrics.items() if key != "loss"},
        }
        run.log.write(row)
    return p.iteration, p.phase_seconds
