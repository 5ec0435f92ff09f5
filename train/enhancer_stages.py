"""Stages 2 and 3: the enhancer trains on the backlit images while the prompts stay fixed.

Stage 2 (warm-up, from a random enhancer only) teaches it the identity through the identity loss alone; stage 3
trains it with the CLIP loss of the fixed prompts plus the identity loss, and its best model's outputs become the
round's results that stage 4 ranks.
"""

from __future__ import annotations

from typing import Any

import torch

from cliplit.core.metrics import psnr
from cliplit.train.data import AugmentSpec, StepBatches
from cliplit.train.losses import clip_enhance_loss, identity_loss, prompt_logits
from cliplit.train.network import LightMapNet, apply_light_map
from cliplit.train.outputs import enhancer_source, save_enhancer_files, write_results, write_sample_sheet
from cliplit.train.run_state import clone_state
from cliplit.train.schedule import ENHANCE, WARMUP
from cliplit.train.stage import Stage


class EnhancerStage(Stage):
    """What stages 2 and 3 share: backlit batches, the enhancement, the identity loss and the enhancer files."""

    def batches(self) -> StepBatches:
        c = self.config
        augment = AugmentSpec("full" if c.enhance_augment else "none", c.max_zoom, c.max_rotation)
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
    """Stage 2: the identity loss alone; re-initialise the enhancer while its PSNR stays too low."""

    name = WARMUP

    def iterations(self) -> int:
        return self.config.warmup_iters

    def prepare(self) -> StepBatches:
        return self.batches()

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c, p = self.config, self.run.progress
        x, y = self.enhance(batch)
        loss = self.identity_loss(x, y, c.warmup_layer_weights)
        self.run.precision.update(loss, self.run.enhancer_opt)
        metrics = {"loss": loss.item(), "identity_loss": loss.item()}
        done = p.iteration + 1  # this step's number; PSNR costs a copy to the CPU, so only when it is used
        if done - p.attempt_start == c.warmup_check_iters or done % c.log_every == 0 or done == p.target:
            metrics["psnr"] = psnr(y.detach().float().cpu().numpy(), x.float().cpu().numpy(), peak=1.0)
        return metrics

    def after_step(self, metrics: dict[str, float]) -> None:
        c, p, run = self.config, self.run.progress, self.run
        if p.iteration - p.attempt_start != c.warmup_check_iters:
            return
        quality = run.ctx.mean(metrics["psnr"])
        if quality < c.warmup_min_psnr and p.restarts < c.warmup_max_restarts:
            run.say(f"warm-up PSNR {quality:.2f} dB < {c.warmup_min_psnr} dB: re-initialising the enhancer")
            run.models.enhancer.load_state_dict(LightMapNet("train").state_dict())
            run.enhancer_opt = run.new_enhancer_optimizer()
            p.restarts += 1
            p.attempt_start = p.iteration
            p.target = p.iteration + c.warmup_iters

    def finish(self, record: dict[str, Any]) -> None:
        self.run.best_enhancer = clone_state(self.run.models.enhancer)
        record["restarts"] = self.run.progress.restarts
        self.save_files(best=None)


class Enhance(EnhancerStage):
    """Stage 3: the CLIP loss of the fixed prompts plus the identity loss; the best model makes the round's results."""

    name = ENHANCE

    @property
    def label(self) -> str:
        return f"{self.name} {self.round_index}"

    def iterations(self) -> int:
        return self.config.enhance_iters

    def prepare(self) -> StepBatches:
        run = self.run
        with torch.no_grad(), run.precision.autocast():  # the prompts are fixed in this stage: their features once
            self.text = run.models.text_encoder(run.best_prompts, run.models.prompts.eot_index)
        return self.batches()

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c, run = self.config, self.run
        x, y = self.enhance(batch)
        with run.precision.autocast():
            image_features = run.models.image_encoder(y)
        clip_part = clip_enhance_loss(prompt_logits(image_features, self.text, c.logit_scale), c.clip_loss_weight)
        identity_part = self.identity_loss(x, y, c.identity_layer_weights)
        loss = clip_part + c.identity_weight * identity_part
        run.precision.update(loss, run.enhancer_opt)
        return {"loss": loss.item(), "clip_loss": clip_part.item(), "identity_loss": identity_part.item()}

    def after_step(self, metrics: dict[str, float]) -> None:
        if self.improved():
            self.run.best_enhancer = clone_state(self.run.models.enhancer)
        self.extend(self.config.enhance_extend_iters, self.config.enhance_extend_above)

    def finish(self, record: dict[str, Any]) -> None:
        run, c = self.run, self.config
        record["best_loss"] = run.progress.best_loss if run.progress.window else None
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
