"""CLIP-LIT's training schedule: prompt initialisation, enhancer warm-up, then rounds of enhancer training and prompt
refinement, with resumable checkpoints, logs, per-round samples and the trained enhancer as its product.

A run is a list of phases (stage, round). Each phase runs a number of iterations (extended while its running loss
stays above a threshold), tracks its best model by that running loss, and ends by writing what later phases and
users need. Every ``checkpoint_every`` iterations and after each phase the whole state is saved, and ``resume``
continues from it exactly; see ``cliplit.train.state`` and ``cliplit.train.data`` for why that is exact.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cliplit.core.errors import CliplitError
from cliplit.core.metrics import psnr
from cliplit.core.version import cliplit_version
from cliplit.core.weights import resolve_weights, sha256_of
from cliplit.train.cache import image_feature_table, lookup
from cliplit.train.checkpoint import load_enhancer, save_enhancer
from cliplit.train.clip_models import IdentityFeatures, ImageEncoder, build_clip, resolve_clip
from cliplit.train.config import TrainConfig, resume_config, write_config
from cliplit.train.data import DIHEDRAL_SYMMETRIES, AugmentSpec, StepBatches, list_images
from cliplit.train.distributed import setup_distributed
from cliplit.train.logs import RunLog, write_json
from cliplit.train.losses import (
    BACKLIT,
    NEWER,
    OLDER,
    WELL_LIT,
    RankMargins,
    clip_enhance_loss,
    identity_loss,
    negative_score,
    prompt_cross_entropy,
    prompt_logits,
    ranking_loss,
    ranking_terms,
)
from cliplit.train.network import LightMapNet, apply_light_map
from cliplit.train.outputs import result_paths, write_results, write_sample_sheet
from cliplit.train.prompts import PromptPair, TextEncoder, check_prompts_fit, load_prompts, save_prompts
from cliplit.train.state import Progress, load_state, restore_rng, save_state

PROMPT_INIT, WARMUP, ENHANCE, REFINE = "prompt_init", "warmup", "enhance", "refine"
CHECKPOINT = Path("checkpoints") / "last.pt"

StepFn = Callable[[dict[str, torch.Tensor]], dict[str, float]]


@dataclass
class TrainOutcome:
    """Where a run stands after ``train`` returns."""

    run_dir: Path
    finished: bool
    step: int
    summary: dict[str, Any]


def plan_phases(config: TrainConfig) -> list[tuple[str, int]]:
    """The (stage, round) phases of a run: stage 1 unless prompts are given, stage 2 only from a random enhancer."""
    phases = []
    if config.init_prompts is None and config.prompt_init_iters > 0:
        phases.append((PROMPT_INIT, 0))
    if config.init_enhancer == "none" and config.warmup_iters > 0:
        phases.append((WARMUP, 0))
    for index in range(config.rounds):
        phases += [(ENHANCE, index), (REFINE, index)]
    return phases


def train(config: TrainConfig, *, resume: bool = False) -> TrainOutcome:
    """Run (or resume) training as configured; returns when done or when ``max_steps`` is reached."""
    config.validate()
    checkpoint = Path(config.out) / CHECKPOINT
    if not resume and checkpoint.exists():
        raise CliplitError(
            f"{config.out} already holds a training run; pass --resume to continue it or pick another --out"
        )
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.run()
    finally:
        trainer.close()


class Trainer:
    """Holds the models, optimisers and schedule position of one run; ``run`` executes the remaining phases."""

    def __init__(self, config: TrainConfig, *, resume: bool) -> None:
        self.config = config
        self.run_dir = Path(config.out)
        self.ctx = setup_distributed(config.device)
        self.device = self.ctx.device
        self.phases = plan_phases(config)
        # Everything that can fail for a user-fixable reason is checked before any model is built.
        self.backlit = list_images(config.backlit, "--backlit")
        self.well_lit = list_images(config.well_lit, "--well-lit")
        init_path = None if config.init_enhancer == "none" else resolve_weights(config.init_enhancer)
        options = {"cache_dir": config.clip_cache_dir, "offline": config.offline}
        clip_source = resolve_clip(config.clip_model, config.clip_pretrained, flag="--clip-pretrained", **options)
        needs_identity = any(stage in (WARMUP, ENHANCE) for stage, _ in self.phases)
        identity_source = None
        if needs_identity:
            identity_source = resolve_clip(
                config.identity_model, config.identity_pretrained, flag="--identity-pretrained", **options
            )

        _seed_everything(config.seed)  # random CLIP weights and the random enhancer follow from the seed
        clip = build_clip(clip_source, self.device)
        self.image_encoder = ImageEncoder(clip, clip_source)
        self.text_encoder = TextEncoder(clip)
        self.identity = None
        if identity_source is not None:
            self.identity = IdentityFeatures(build_clip(identity_source, self.device), identity_source)
        if init_path is None:
            self.enhancer = LightMapNet("train")
            self.init_sha256 = None
        else:
            self.enhancer = load_enhancer(init_path, padding="train").model
            self.init_sha256 = sha256_of(init_path)
        self.enhancer.to(self.device).train()
        if config.init_prompts:
            self.prompts = load_prompts(config.init_prompts, config.prompt_length)
        else:
            self.prompts = PromptPair.from_clip(clip, config.prompt_length)
        check_prompts_fit(self.prompts, clip)
        self.prompts.to(self.device)
        self.enhancer_opt = self._enhancer_optimizer()
        self.prompt_opt = torch.optim.Adam(
            self.prompts.parameters(), lr=config.prompt_lr, weight_decay=config.prompt_weight_decay
        )
        self.best_enhancer = _clone_state(self.enhancer)
        self.best_prompts = self.prompts.embeddings.detach().clone()

        amp = config.amp == "on" or (config.amp == "auto" and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if config.amp_dtype == "bfloat16" else torch.float16
        self.amp = amp
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp and self.amp_dtype == torch.float16)
        self.tables: dict[str, torch.Tensor] = {}  # frozen image features of the training folders
        self.result_tables: dict[int, torch.Tensor] = {}  # ... of the per-round results in use

        self.progress = Progress()
        if resume:
            self._restore(self.run_dir / CHECKPOINT)
        self.enhancer_ddp = self.ctx.wrap(self.enhancer)
        self.prompts_ddp = self.ctx.wrap(self.prompts)
        self.log = None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_config(config, self.run_dir / "config.yaml")
            self.log = RunLog(self.run_dir, resume_step=self.progress.step)

    # ----------------------------------------------------------------------------------------------- schedule

    def run(self) -> TrainOutcome:
        while self.progress.phase < len(self.phases) and not self._should_stop():
            stage, round_index = self.phases[self.progress.phase]
            if not self._run_phase(stage, round_index):
                break
        finished = self.progress.phase >= len(self.phases)
        self._save_checkpoint()
        summary = self._summary(finished)
        if self.ctx.is_main:
            write_json(self.run_dir / "summary.json", summary)
            if not finished:
                self._say(f"stopped after {self.progress.step} iterations; continue with --resume --out {self.run_dir}")
        return TrainOutcome(self.run_dir, finished, self.progress.step, summary)

    def _run_phase(self, stage: str, round_index: int) -> bool:
        """Run the rest of one phase; False when ``max_steps`` stopped it first."""
        p, config = self.progress, self.config
        if p.target == 0:
            p.target = self._base_iterations(stage)
            p.iteration = p.extensions = p.restarts = p.attempt_start = 0
            p.window, p.best_loss, p.phase_seconds = [], float("inf"), 0.0
        step_fn, batches = self._prepare(stage, round_index)
        loader = DataLoader(
            batches,
            batch_size=None,
            sampler=itertools.count(p.iteration),
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # keeps the loader from drawing on the global RNG (resume exactness)
            persistent_workers=False,
        )
        batches_iter = iter(loader)
        bar = tqdm(
            total=p.target,
            initial=p.iteration,
            desc=f"{stage} {round_index}" if stage in (ENHANCE, REFINE) else stage,
            disable=not (config.progress and self.ctx.is_main),
            dynamic_ncols=True,
            file=sys.stderr,
        )
        last_log = (p.iteration, p.phase_seconds)
        try:
            while p.iteration < p.target:
                if self._should_stop():
                    return False
                started = time.perf_counter()
                metrics = step_fn(next(batches_iter))
                p.phase_seconds += time.perf_counter() - started
                p.iteration += 1
                p.step += 1
                loss = self.ctx.mean(metrics["loss"])
                p.window = [*p.window, loss][-config.running_loss_window :]
                self._track_best(stage)
                self._after_iteration(stage, metrics)
                bar.total = p.target
                bar.update(1)
                bar.set_postfix(loss=f"{p.running_loss:.4g}", refresh=False)
                if p.iteration % config.log_every == 0 or p.iteration == p.target:
                    last_log = self._log_row(stage, round_index, loss, metrics, last_log)
                if p.step % config.checkpoint_every == 0:
                    self._save_checkpoint()
        finally:
            bar.close()
            del batches_iter  # shuts the loader's workers down
        self._finish_phase(stage, round_index)
        p.phase += 1
        p.target = 0
        self._save_checkpoint()
        return True

    def _base_iterations(self, stage: str) -> int:
        c = self.config
        return {PROMPT_INIT: c.prompt_init_iters, WARMUP: c.warmup_iters, ENHANCE: c.enhance_iters}.get(
            stage, c.refine_iters
        )

    def _should_stop(self) -> bool:
        return self.config.max_steps is not None and self.progress.step >= self.config.max_steps

    def _track_best(self, stage: str) -> None:
        p = self.progress
        if stage not in (ENHANCE, REFINE) or p.running_loss >= p.best_loss:
            return
        p.best_loss = p.running_loss
        if stage == ENHANCE:
            self.best_enhancer = _clone_state(self.enhancer)
        else:
            self.best_prompts = self.prompts.embeddings.detach().clone()

    def _after_iteration(self, stage: str, metrics: dict[str, float]) -> None:
        """Stage extensions (3, 4) and the warm-up's re-initialisation check (2)."""
        p, c = self.progress, self.config
        if stage in (ENHANCE, REFINE) and p.iteration == p.target and p.extensions < c.max_extensions:
            extend, above = (
                (c.enhance_extend_iters, c.enhance_extend_above)
                if stage == ENHANCE
                else (c.refine_extend_iters, c.refine_extend_above)
            )
            if extend > 0 and p.running_loss > above:
                p.target += extend
                p.extensions += 1
        if stage == WARMUP and p.iteration - p.attempt_start == c.warmup_check_iters:
            quality = self.ctx.mean(metrics["psnr"])
            if quality < c.warmup_min_psnr and p.restarts < c.warmup_max_restarts:
                self._say(f"warm-up PSNR {quality:.2f} dB < {c.warmup_min_psnr} dB: re-initialising the enhancer")
                self.enhancer.load_state_dict(LightMapNet("train").state_dict())
                self.enhancer_opt = self._enhancer_optimizer()
                p.restarts += 1
                p.attempt_start = p.iteration
                p.target = p.iteration + c.warmup_iters

    def _finish_phase(self, stage: str, round_index: int) -> None:
        """Write what the phase produced, and record its statistics."""
        p, c = self.progress, self.config
        record: dict[str, Any] = {
            "stage": stage,
            "round": round_index,
            "iterations": p.iteration,
            "extensions": p.extensions,
            "seconds": round(p.phase_seconds, 3),
            "its_per_s": round(p.iteration / p.phase_seconds, 3) if p.phase_seconds > 0 else None,
            "running_loss": p.running_loss if p.window else None,
        }
        if stage == PROMPT_INIT:
            self.best_prompts = self.prompts.embeddings.detach().clone()
        if stage == WARMUP:
            self.best_enhancer = _clone_state(self.enhancer)
            record["restarts"] = p.restarts
            self._save_enhancers(round_index, best=False)
        if stage in (ENHANCE, REFINE):
            record["best_loss"] = p.best_loss if p.window else None
        if stage == ENHANCE:
            if self.ctx.is_main:
                best = LightMapNet("train").to(self.device)
                best.load_state_dict(self.best_enhancer)
                size = c.prompt_image_size
                outputs = write_results(best, self.backlit, self.run_dir, round_index, size=size)
                count = min(c.num_samples, len(self.backlit))
                if count:
                    sheet = self.run_dir / "samples" / f"round_{round_index:03d}.png"
                    write_sample_sheet(self.backlit[:count], outputs[:count], sheet, size=size)
                self._save_enhancers(round_index, best=True)
            self.ctx.barrier()
        if stage in (PROMPT_INIT, REFINE):
            p.accuracy = record["accuracy"] = self._prompt_accuracy()
            self._save_prompt_files(stage, round_index)
        p.phases.append(record)
        self._say(_describe(record))
        if self.ctx.is_main:
            write_json(self.run_dir / "summary.json", self._summary(False))

    # ----------------------------------------------------------------------------------------------- stages

    def _prepare(self, stage: str, round_index: int) -> tuple[StepFn, StepBatches]:
        c = self.config
        common = {"seed": c.seed, "stream": f"{stage}/{round_index}", "rank": self.ctx.rank, "world": self.ctx.world}
        if stage == PROMPT_INIT:
            return self._prepare_prompt_init(common)
        if stage == REFINE:
            return self._prepare_refine(round_index, common)
        augment = AugmentSpec("full" if c.enhance_augment else "none", c.max_zoom, c.max_rotation)
        batches = StepBatches([self.backlit], size=c.image_size, batch_size=c.batch_size, augment=augment, **common)
        if stage == WARMUP:
            return self._warmup_step, batches
        with torch.no_grad(), self._autocast():
            text = self.text_encoder(self.best_prompts, self.prompts.eot_index)  # frozen in this stage: once

        def enhance_step(batch: dict[str, torch.Tensor]) -> dict[str, float]:
            x, y = self._enhance(batch)
            with self._autocast():
                image_features = self.image_encoder(y)
            clip_part = clip_enhance_loss(prompt_logits(image_features, text, c.logit_scale), c.clip_loss_weight)
            identity_part = c.identity_scale * self._identity_loss(x, y, c.identity_layer_weights)
            loss = clip_part + c.identity_weight * identity_part
            self._update(loss, self.enhancer_opt)
            return {"loss": loss.item(), "clip_loss": clip_part.item(), "identity_loss": identity_part.item()}

        return enhance_step, batches

    def _warmup_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        x, y = self._enhance(batch)
        loss = c.identity_scale * self._identity_loss(x, y, c.warmup_layer_weights)
        self._update(loss, self.enhancer_opt)
        metrics = {"loss": loss.item(), "identity_loss": loss.item()}
        p = self.progress
        done = p.iteration + 1  # this step's number; PSNR costs a copy to the CPU, so only when it is used
        if done - p.attempt_start == c.warmup_check_iters or done % c.log_every == 0 or done == p.target:
            metrics["psnr"] = psnr(y.detach().float().cpu().numpy(), x.float().cpu().numpy(), peak=1.0)
        return metrics

    def _prepare_prompt_init(self, common: dict[str, Any]) -> tuple[StepFn, StepBatches]:
        c = self.config
        labels = self._labels()
        cached = c.prompt_augment != "full"
        table = torch.cat([self._table(BACKLIT), self._table(WELL_LIT)]) if cached else None
        batches = StepBatches(
            [self.backlit + self.well_lit],
            size=c.prompt_image_size,
            batch_size=c.prompt_batch_size,
            augment=self._prompt_augment(),
            load=not cached,
            **common,
        )

        def prompt_init_step(batch: dict[str, torch.Tensor]) -> dict[str, float]:
            rows = batch["rows"]
            features = lookup(table, rows, batch["symmetry"]) if cached else self._encode(batch["images"][:, 0])
            with self._autocast():
                text = self.prompts_ddp(self.text_encoder)
            logits = prompt_logits(features, text, c.logit_scale)  # FP32: 100 * cos needs more than 8 mantissa bits
            target = labels[rows.to(self.device)]
            loss = prompt_cross_entropy(logits, target)
            self._update(loss, self.prompt_opt)
            accuracy = (logits.argmax(dim=1) == target).float().mean().item()
            return {"loss": loss.item(), "accuracy": accuracy}

        return prompt_init_step, batches

    def _prepare_refine(self, round_index: int, common: dict[str, Any]) -> tuple[StepFn, StepBatches]:
        c = self.config
        # Results of this round (newer) and the round before (older): refinement follows enhancement, so >= 1 exists.
        rounds = {name: r for name, r in ((NEWER, round_index), (OLDER, round_index - 1)) if r >= 0}
        columns = {BACKLIT: self.backlit}
        columns.update({name: result_paths(self.run_dir, r, len(self.backlit)) for name, r in rounds.items()})
        margins = RankMargins(
            c.rank_margin_no_result, c.rank_margin_backlit, c.rank_margin_one_result, c.rank_margin_two_results
        )
        terms = ranking_terms(len(rounds), margins, c.rank_order)
        cached = c.prompt_augment != "full"
        tables = {}
        if cached:
            tables = {BACKLIT: self._table(BACKLIT), WELL_LIT: self._table(WELL_LIT)}
            tables.update({name: self._result_table(r) for name, r in sorted(rounds.items(), key=lambda item: item[1])})
        names = [*columns, WELL_LIT]
        batches = StepBatches(
            list(columns.values()),
            partners=self.well_lit,
            size=c.prompt_image_size,
            batch_size=c.prompt_batch_size,
            augment=self._prompt_augment(),
            load=not cached,
            **common,
        )

        def refine_step(batch: dict[str, torch.Tensor]) -> dict[str, float]:
            if cached:
                features = {
                    name: lookup(tables[name], batch["partners" if name == WELL_LIT else "rows"], batch["symmetry"])
                    for name in names
                }
            else:
                features = {name: self._encode(batch["images"][:, j]) for j, name in enumerate(names)}
            with self._autocast():
                text = self.prompts_ddp(self.text_encoder)
            scores = {name: negative_score(prompt_logits(f, text, c.logit_scale)) for name, f in features.items()}
            loss = c.rank_loss_weight * ranking_loss(scores, terms)
            self._update(loss, self.prompt_opt)
            return {"loss": loss.item(), "rank_loss": loss.item()}

        return refine_step, batches

    # ----------------------------------------------------------------------------------------------- helpers

    def _enhance(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The input batch and its enhancement by the ONNX contract's formula, in FP32 (outside autocast)."""
        x = batch["images"][:, 0].to(self.device, non_blocking=True)
        return x, apply_light_map(x, self.enhancer_ddp(x))

    def _identity_loss(self, x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
        """Features under mixed precision, the loss itself in FP32."""
        with self._autocast():
            with torch.no_grad():
                reference = self.identity(x)
            enhanced = self.identity(y)
        return identity_loss(enhanced, reference, weights)

    @torch.no_grad()
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.image_encoder(images.to(self.device, non_blocking=True))

    def _update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def _autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def _prompt_augment(self) -> AugmentSpec:
        c = self.config
        return AugmentSpec(c.prompt_augment, c.max_zoom, c.max_rotation)

    def _features(self, paths: list[Path]) -> torch.Tensor:
        """Image features (N x symmetries x D) at the prompt size: all 8 for "dihedral", else only the identity."""
        return image_feature_table(
            self.image_encoder,
            paths,
            size=self.config.prompt_image_size,
            symmetries=DIHEDRAL_SYMMETRIES if self.config.prompt_augment == "dihedral" else 1,
            device=self.device,
            autocast=self._autocast,
        )

    def _table(self, name: str) -> torch.Tensor:
        """The cached features of the backlit or well-lit folder, computed once per run."""
        if name not in self.tables:
            self.tables[name] = self._features(self.backlit if name == BACKLIT else self.well_lit)
        return self.tables[name]

    def _result_table(self, round_index: int) -> torch.Tensor:
        """The cached features of one round's results; rounds no longer ranked are dropped."""
        if round_index not in self.result_tables:
            paths = result_paths(self.run_dir, round_index, len(self.backlit))
            self.result_tables[round_index] = self._features(paths)
        self.result_tables = {r: t for r, t in self.result_tables.items() if r >= round_index - 1}
        return self.result_tables[round_index]

    @torch.no_grad()
    def _prompt_accuracy(self) -> float:
        """Accuracy of the best prompts on the un-augmented training images (features cached once per run)."""
        features = torch.cat([self._table(BACKLIT)[:, 0], self._table(WELL_LIT)[:, 0]])
        labels = self._labels()
        with self._autocast():
            text = self.text_encoder(self.best_prompts, self.prompts.eot_index)
        predictions = prompt_logits(features, text, self.config.logit_scale).argmax(dim=1)
        return float((predictions == labels).float().mean())

    def _labels(self) -> torch.Tensor:
        """Labels of the backlit-then-well-lit image list, from the folders alone: 0 = backlit, 1 = well-lit."""
        return torch.tensor([0] * len(self.backlit) + [1] * len(self.well_lit), device=self.device)

    def _enhancer_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.Adam(self.enhancer.parameters(), lr=c.enhancer_lr, weight_decay=c.enhancer_weight_decay)

    def _source(self, kind: str, round_index: int) -> dict[str, Any]:
        c = self.config
        return {
            "trained_by": f"cliplit train {cliplit_version()}",
            "kind": kind,
            "round": round_index,
            "step": self.progress.step,
            "init_enhancer": c.init_enhancer,
            "init_enhancer_sha256": self.init_sha256,
            "clip_model": c.clip_model,
            "clip_pretrained": c.clip_pretrained,
            "identity_model": c.identity_model,
            "identity_pretrained": c.identity_pretrained,
            "config": c.to_dict(),
        }

    def _save_enhancers(self, round_index: int, *, best: bool) -> None:
        if not self.ctx.is_main:
            return
        padding = self.config.export_padding
        save_enhancer(
            self.enhancer,
            self.run_dir / "enhancer_final.pth",
            padding=padding,
            source=self._source("final", round_index),
        )
        if best:
            model = LightMapNet("train")
            model.load_state_dict(self.best_enhancer)
            source = self._source("best", round_index)
            save_enhancer(model, self.run_dir / "enhancer_best.pth", padding=padding, source=source)
            save_enhancer(model, self.run_dir / f"enhancer_round_{round_index:03d}.pth", padding=padding, source=source)

    def _save_prompt_files(self, stage: str, round_index: int) -> None:
        if not self.ctx.is_main:
            return
        source = {
            "stage": stage,
            "round": round_index,
            "clip_model": self.config.clip_model,
            "step": self.progress.step,
        }
        save_prompts(self.prompts, self.run_dir / "prompts_final.pt", {**source, "kind": "final"})
        best = PromptPair(self.best_prompts, self.prompts.eot_index)
        save_prompts(best, self.run_dir / "prompts_best.pt", {**source, "kind": "best"})

    def _save_checkpoint(self) -> None:
        if not self.ctx.is_main:
            return
        tensors = {
            "enhancer": _clone_state(self.enhancer),
            "enhancer_best": self.best_enhancer,
            "prompts": self.prompts.embeddings.detach().cpu(),
            "prompts_best": self.best_prompts.cpu(),
            "enhancer_optimizer": self.enhancer_opt.state_dict(),
            "prompt_optimizer": self.prompt_opt.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        save_state(self.run_dir / CHECKPOINT, self.progress, tensors, self.config.to_dict())

    def _restore(self, path: Path) -> None:
        progress, blob = load_state(path)
        resume_config(blob["config"], self.config.to_dict())  # raises if an option that shapes the run changed
        self.progress = progress
        self.enhancer.load_state_dict(blob["enhancer"])
        self.best_enhancer = {k: v.to(self.device) for k, v in blob["enhancer_best"].items()}
        self.prompts.embeddings.data.copy_(blob["prompts"])
        self.best_prompts = blob["prompts_best"].to(self.device)
        self.enhancer_opt.load_state_dict(blob["enhancer_optimizer"])
        self.prompt_opt.load_state_dict(blob["prompt_optimizer"])
        self.scaler.load_state_dict(blob["scaler"])
        restore_rng(blob["rng"])  # last: building the models above drew on the generators

    def _log_row(
        self, stage: str, round_index: int, loss: float, metrics: dict[str, float], last: tuple[int, float]
    ) -> tuple[int, float]:
        p = self.progress
        elapsed = p.phase_seconds - last[1]
        if self.log is not None:
            row = {
                "step": p.step,
                "stage": stage,
                "round": round_index,
                "iteration": p.iteration,
                "loss": loss,
                "running_loss": p.running_loss,
                "its_per_s": (p.iteration - last[0]) / elapsed if elapsed > 0 else None,
                "elapsed_s": p.phase_seconds,
                **{key: value for key, value in metrics.items() if key != "loss"},
            }
            self.log.write(row)
        return p.iteration, p.phase_seconds

    def _summary(self, finished: bool) -> dict[str, Any]:
        stages: dict[str, dict[str, float]] = {}
        for record in self.progress.phases:
            entry = stages.setdefault(record["stage"], {"iterations": 0, "seconds": 0.0})
            entry["iterations"] += record["iterations"]
            entry["seconds"] += record["seconds"]
        for entry in stages.values():
            entry["its_per_s"] = round(entry["iterations"] / entry["seconds"], 3) if entry["seconds"] > 0 else None
        return {
            "finished": finished,
            "step": self.progress.step,
            "accuracy": self.progress.accuracy,
            "stages": stages,
            "phases": self.progress.phases,
            "device": str(self.device),
            "world_size": self.ctx.world,
            "amp": self.amp,
        }

    def _say(self, message: str) -> None:
        if self.ctx.is_main:
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.ctx.close()


def _describe(record: dict[str, Any]) -> str:
    text = f"{record['stage']} {record['round']}: {record['iterations']} iterations"
    if record["its_per_s"]:
        text += f" in {record['seconds']:.1f} s ({record['its_per_s']:.2f} it/s)"
    if record.get("best_loss") is not None:
        text += f", best running loss {record['best_loss']:.4g}"
    if record.get("accuracy") is not None:
        text += f", prompt accuracy {100 * record['accuracy']:.1f}%"
    return text


def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
