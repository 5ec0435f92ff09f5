"""Stages 2 and 3: the enhancer trains on the backlit images while the prompts stay fixed.

Stage 2 (warm-up, from a random enhancer only) teaches it the identity through the identity loss alone; stage 3
trains it with the CLIP loss of the fixed prompts plus the identity loss, and its best model's outputs become the
round's results that stage 4 ranks.
"""

from __future__ import annotations

from typing import Any

import torch

from cliplit.core.luma import BT601_LUMA_RGB, STUDIO_SWING
from cliplit.train.data import AugmentSpec, StepBatches
from cliplit.train.losses import Stage3Weights, identity_loss, stage3_loss
from cliplit.train.models import fresh_enhancer
from cliplit.train.network import LightMapNet, apply_light_map
from cliplit.train.outputs import enhancer_source, save_enhancer_files, write_results, write_sample_sheet
from cliplit.train.run_state import clone_state
from cliplit.train.schedule import ENHANCE, WARMUP
from cliplit.train.stage import OFFICIAL_WINDOW, Stage

#: BT.601 studio-swing Y of RGB in [0, 1] (the Y of YCbCr, as pyiqa's rgb2ycbcr computes it), without its offset:
#: 65.481, 128.553 and 24.966 out of 255
BT601_STUDIO_Y_RGB = tuple(weight * STUDIO_SWING for weight in BT601_LUMA_RGB)


def luma_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean over the batch of each image pair's PSNR on BT.601 studio-swing Y (data range 1, 1e-8 added to the
    MSE): the official warm-up's measure, pyiqa's ``psnr`` with ``test_y_channel=True, color_space='ycbcr'``."""
    weights = torch.tensor(BT601_STUDIO_Y_RGB, device=a.device).view(1, 3, 1, 1)
    difference = ((a.float() - b.float()) * weights).sum(dim=1)
    mse = difference.pow(2).flatten(1).mean(dim=1)
    return float((10.0 * torch.log10(1.0 / (mse + 1e-8))).mean())


class EnhancerStage(Stage):
    """What stages 2 and 3 share: backlit batches, the enhancement, the identity loss and the enhancer files."""

    def batches(self) -> StepBatches:
        c = self.config
        mode = "full" if c.enhance_augment else "none"
        augment = AugmentSpec(mode, c.enhance_zoom, c.zoom_prob, c.rotation_prob, c.max_rotation)
        return StepBatches(
            [self.run.backlit], size=c.image_size, batch_size=c.batch_size, augment=augment, **self.batch_options()
        )

    def enhance(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The input batch and its enhancement by the ONNX contract's formula, in FP32 (outside autocast)."""
        x = batch["images"][:, 0].to(self.run.device, non_blocking=True)
        return x, apply_light_map(x, self.run.enhancer_ddp(x))

    def identity_loss(self, x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
        """``identity_scale`` times the identity loss: features under mixed precision, the loss itself in FP32."""
        identity = self.run.models.identity
        with self.run.precision.autocast():
            with torch.no_grad():
                reference = identity(x)
            enhanced = identity(y)
        return self.config.identity_scale * identity_loss(enhanced, reference, weights)

    def save_files(self, best: LightMapNet | None) -> None:
        """The enhancer files (main process only): the current iterate, and the best model when given."""
        run = self.run
        if run.ctx.is_main:
            source = enhancer_source(self.config, self.round_index, run.progress.step, run.models.init_sha256)
            save_enhancer_files(
                run.run_dir,
                run.models.enhancer,
                best,
                round_index=self.round_index,
                padding=self.config.export_padding,
                source=source,
            )


class Warmup(EnhancerStage):
    """Stage 2: the identity loss alone; re-initialise the enhancer when its PSNR stays too low.

    As the official train.py: after ``--warmup-check-iters`` iterations of an attempt, every iteration, the mean luma
    PSNR of the last 30 iterations is tested against ``--warmup-min-psnr``; below it, the enhancer is drawn afresh
    (``fresh_enhancer``) with a new optimiser and the stage gets ``--warmup-restart-iters`` more iterations. The
    official loop has no limit; ``--warmup-max-restarts`` is a safety limit.
    """

    name = WARMUP

    def iterations(self) -> int:
        return self.config.warmup_iters

    def prepare(self) -> StepBatches:
        return self.batches()

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, y = self.enhance(batch)
        loss = self.identity_loss(x, y, self.config.warmup_layer_weights)
        self.run.precision.update(loss, self.run.enhancer_opt)
        return {"loss": loss.item(), "identity_loss": loss.item(), "psnr": luma_psnr(y.detach(), x)}

    def after_step(self, metrics: dict[str, float]) -> None:
        c, p, run = self.config, self.run.progress, self.run
        p.recent_psnr = [*p.recent_psnr, run.ctx.mean(metrics["psnr"])][-OFFICIAL_WINDOW:]
        quality = sum(p.recent_psnr) / OFFICIAL_WINDOW
        checked = p.iteration - p.attempt_start > c.warmup_check_iters
        if checked and quality < c.warmup_min_psnr and p.restarts < c.warmup_max_restarts:
            run.say(f"warm-up PSNR {quality:.2f} dB < {c.warmup_min_psnr} dB: re-initialising the enhancer")
            run.models.enhancer.load_state_dict(fresh_enhancer().state_dict())
            run.enhancer_opt = run.new_enhancer_optimizer()
            p.restarts += 1
            p.attempt_start = p.iteration
            p.target += c.warmup_restart_iters

    def finish(self, record: dict[str, Any]) -> None:
        self.run.best_enhancer = clone_state(self.run.models.enhancer)
        record["restarts"] = self.run.progress.restarts
        self.save_files(best=None)


METRICS = {"loss": "total", "clip_loss": "clip", "identity_loss": "identity"}  # log column -> stage3_loss key


class Enhance(EnhancerStage):
    """Stage 3: the CLIP loss of the fixed prompts plus the identity loss (``stage3_loss``); the best model makes the
    round's results.

    The prompts are the latest ones, as in the official code (its ``best_prompt`` is the very object it trains), or
    the lowest-running-loss ones with ``--stage3-prompts best``. The best model is tested the official way (every 20
    iterations, see ``Stage.improved_officially``) or by the running loss (``--best-enhancer running-mean``).
    """

    name = ENHANCE

    @property
    def label(self) -> str:
        return f"{self.name} {self.round_index}"

    def iterations(self) -> int:
        return self.config.enhance_iters

    def prepare(self) -> StepBatches:
        run, c = self.run, self.config
        latest = c.stage3_prompts == "latest"
        self.prompts = (run.models.prompts.embeddings if latest else run.best_prompts).detach().clone()
        self.weights = Stage3Weights(
            c.clip_loss_weight, c.identity_scale, c.identity_weight, c.identity_layer_weights, c.logit_scale
        )
        return self.batches()

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        run, models = self.run, self.run.models
        x = batch["images"][:, 0].to(run.device, non_blocking=True)
        losses = stage3_loss(
            run.enhancer_ddp,
            x,
            self.prompts,
            models.clip,
            models.identity_clip,
            eot_index=models.prompts.eot_index,
            weights=self.weights,
            clip_preprocess=models.clip_preprocess,
            identity_preprocess=models.identity.preprocess,
            autocast=run.precision.autocast,
        )
        run.precision.update(losses["total"], run.enhancer_opt)
        return {name: losses[key].item() for name, key in METRICS.items()}

    def after_step(self, metrics: dict[str, float]) -> None:
        official = self.config.best_enhancer == "official"
        if self.improved_officially() if official else self.improved():
            self.run.best_enhancer = clone_state(self.run.models.enhancer)
        self.extend(self.config.enhance_extend_iters, self.config.enhance_extend_above)

    def finish(self, record: dict[str, Any]) -> None:
        run, c = self.run, self.config
        record["best_loss"] = self.best_loss()
        if run.ctx.is_main:
            best = LightMapNet("train").to(run.device)
            best.load_state_dict(run.best_enhancer)
            size = c.prompt_image_size
            outputs = write_results(best, run.backlit, run.run_dir, self.round_index, size=size)
            count = min(c.num_samples, len(run.backlit))
            if count:
                sheet = run.run_dir / "samples" / f"round_{self.round_index:03d}.png"
                write_sample_sheet(run.backlit[:count], outputs[:count], sheet, size=size)
            self.save_files(best=best)
        run.ctx.barrier()
