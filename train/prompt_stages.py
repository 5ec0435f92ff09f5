"""Stages 1 and 4: the prompts train on CLIP image features while the enhancer stays fixed.

Stage 1 (prompt initialisation) classifies the backlit and well-lit training images; stage 4 (refinement) ranks
each backlit image above its enhanced results and those above a well-lit image. With ``--prompt-augment dihedral``
or ``none`` the image features come from tables computed once (``cliplit.train.cache``), so a step only runs the
text tower.
"""

from __future__ import annotations

from typing import Any

import torch

from cliplit.train.cache import lookup
from cliplit.train.data import AugmentSpec, StepBatches, cycled
from cliplit.train.losses import (
    BACKLIT,
    NEWER,
    OLDER,
    WELL_LIT,
    RankMargins,
    negative_score,
    prompt_cross_entropy,
    prompt_logits,
    ranking_loss,
    ranking_terms,
)
from cliplit.train.outputs import result_paths, save_prompt_files
from cliplit.train.prompts import PromptPair
from cliplit.train.schedule import PROMPT_INIT, REFINE, stage_rows
from cliplit.train.stage import Stage


class PromptStage(Stage):
    """What stages 1 and 4 share: the augmentation, image and text features, accuracy and the prompt files."""

    @property
    def cached(self) -> bool:
        """Whether image features come from the cached tables (no zoom or rotation to apply)."""
        return self.config.prompt_augment != "full"

    def augment(self) -> AugmentSpec:
        c = self.config
        return AugmentSpec(c.prompt_augment, c.prompt_zoom, c.zoom_prob, c.rotation_prob, c.max_rotation)

    def rows(self) -> int:
        """Rows of this stage's loader (``cliplit.train.schedule.stage_rows``)."""
        return stage_rows(self.name, len(self.run.backlit), len(self.run.well_lit))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP features of augmented images (the image tower is frozen)."""
        with self.run.precision.autocast():
            return self.run.models.image_encoder(images.to(self.run.device, non_blocking=True))

    def text(self) -> torch.Tensor:
        """The features of the two prompts, with gradients into their embeddings."""
        with self.run.precision.autocast():
            return self.run.prompts_ddp(self.run.models.text_encoder)

    @torch.no_grad()
    def accuracy(self) -> float:
        """Accuracy of the best prompts on the un-augmented training images (features cached once per run)."""
        run = self.run
        features = torch.cat([run.tables.folder(BACKLIT)[:, 0], run.tables.folder(WELL_LIT)[:, 0]])
        with run.precision.autocast():
            text = run.models.text_encoder(run.best_prompts, run.models.prompts.eot_index)
        predictions = prompt_logits(features, text, self.config.logit_scale).argmax(dim=1)
        return float((predictions == run.labels()).float().mean())

    def finish(self, record: dict[str, Any]) -> None:
        """Record the prompt accuracy and write the prompt files."""
        run = self.run
        run.progress.accuracy = record["accuracy"] = self.accuracy()
        if run.ctx.is_main:
            source = {
                "stage": self.name,
                "round": self.round_index,
                "clip_model": self.config.clip_model,
                "step": run.progress.step,
            }
            best = PromptPair(run.best_prompts, run.models.prompts.eot_index)
            save_prompt_files(run.run_dir, run.models.prompts, best, source)


class PromptInit(PromptStage):
    """Stage 1: cross-entropy of the prompt logits against the folder labels (0 = backlit, 1 = well-lit)."""

    name = PROMPT_INIT

    def iterations(self) -> int:
        return self.config.prompt_init_iters

    def prepare(self) -> StepBatches:
        # Both folders repeated up to the larger one, backlit rows first: balanced classes, as the official loader.
        run, c, half = self.run, self.config, self.rows() // 2
        backlit, well_lit = range(len(run.backlit)), range(len(run.backlit), len(run.backlit) + len(run.well_lit))
        index = cycled(backlit, half) + cycled(well_lit, half)  # into the backlit-then-well-lit list
        self.table_rows = torch.tensor(index)
        self.labels = torch.tensor([0] * half + [1] * half, device=run.device)
        if self.cached:
            self.table = torch.cat([run.tables.folder(BACKLIT), run.tables.folder(WELL_LIT)])
        images = run.backlit + run.well_lit
        return StepBatches(
            [[images[i] for i in index]],
            size=c.prompt_image_size,
            batch_size=c.prompt_batch_size,
            augment=self.augment(),
            load=not self.cached,
            **self.batch_options(),
        )

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        rows = batch["rows"]
        if self.cached:
            features = lookup(self.table, self.table_rows[rows], batch["symmetry"])
        else:
            features = self.encode(batch["images"][:, 0])
        logits = prompt_logits(features, self.text(), self.config.logit_scale)  # FP32: 100 * cos needs the bits
        target = self.labels[rows.to(self.run.device)]
        loss = prompt_cross_entropy(logits, target)
        self.run.precision.update(loss, self.run.prompt_opt)
        accuracy = (logits.argmax(dim=1) == target).float().mean().item()
        return {"loss": loss.item(), "accuracy": accuracy}

    def after_step(self, metrics: dict[str, float]) -> None:
        """No best snapshot (the prompts at the end are the ones used); extended as stage 4 is, as in the official
        code (a cross-entropy above 60 at the end, which a trained pair does not reach)."""
        self.extend(self.config.refine_extend_iters, self.config.refine_extend_above)

    def finish(self, record: dict[str, Any]) -> None:
        self.run.best_prompts = self.run.models.prompts.embeddings.detach().clone()
        super().finish(record)


class Refine(PromptStage):
    """Stage 4: margin ranking of s(backlit) > s(results) > s(well-lit); the best prompts fix the next stage 3."""

    name = REFINE

    @property
    def label(self) -> str:
        return f"{self.name} {self.round_index}"

    def iterations(self) -> int:
        return self.config.refine_iters

    def prepare(self) -> StepBatches:
        run, c = self.run, self.config
        # Results of this round (newer) and the round before (older): refinement follows enhancement, so >= 1 exists.
        rounds = {name: r for name, r in ((NEWER, self.round_index), (OLDER, self.round_index - 1)) if r >= 0}
        # max(backlit, well-lit) rows, the smaller folder repeated, each backlit row with its results and one
        # well-lit partner (the official refinement loader).
        rows = cycled(range(len(run.backlit)), self.rows())
        partners = cycled(range(len(run.well_lit)), self.rows())
        self.row_index, self.partner_index = torch.tensor(rows), torch.tensor(partners)
        columns = {BACKLIT: [run.backlit[i] for i in rows]}
        for name, r in rounds.items():
            results = result_paths(run.run_dir, r, len(run.backlit))
            columns[name] = [results[i] for i in rows]
        margins = RankMargins(
            c.rank_margin_no_result, c.rank_margin_backlit, c.rank_margin_one_result, c.rank_margin_two_results
        )
        self.terms = ranking_terms(len(rounds), margins, c.rank_order)
        self.names = [*columns, WELL_LIT]
        if self.cached:
            self.tables = {BACKLIT: run.tables.folder(BACKLIT), WELL_LIT: run.tables.folder(WELL_LIT)}
            for name, r in sorted(rounds.items(), key=lambda item: item[1]):
                self.tables[name] = run.tables.results(r, result_paths(run.run_dir, r, len(run.backlit)))
        return StepBatches(
            list(columns.values()),
            partners=[run.well_lit[i] for i in partners],
            size=c.prompt_image_size,
            batch_size=c.prompt_batch_size,
            augment=self.augment(),
            load=not self.cached,
            **self.batch_options(),
        )

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        if self.cached:
            rows, partners = self.row_index[batch["rows"]], self.partner_index[batch["partners"]]
            features = {
                name: lookup(self.tables[name], partners if name == WELL_LIT else rows, batch["symmetry"])
                for name in self.names
            }
        else:
            features = {name: self.encode(batch["images"][:, j]) for j, name in enumerate(self.names)}
        text = self.text()
        scores = {name: negative_score(prompt_logits(f, text, c.logit_scale)) for name, f in features.items()}
        loss = c.rank_loss_weight * ranking_loss(scores, self.terms)
        self.run.precision.update(loss, self.run.prompt_opt)
        return {"loss": loss.item(), "rank_loss": loss.item()}

    def after_step(self, metrics: dict[str, float]) -> None:
        if self.improved():
            self.run.best_prompts = self.run.models.prompts.embeddings.detach().clone()
        self.extend(self.config.refine_extend_iters, self.config.refine_extend_above)

    def finish(self, record: dict[str, Any]) -> None:
        record["best_loss"] = self.best_loss()
        super().finish(record)
