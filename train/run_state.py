"""What a run holds between iterations, shared by every stage, and the checkpoint that saves and restores it.

The stages only act on this state: the models and their optimisers, the best snapshots (the enhancer whose outputs
become a round's results, the prompts with the lowest running loss), the schedule position (``Progress``), the
feature caches, the log. ``save_checkpoint`` writes all of it with every RNG state; ``open_run(resume=True)``
rebuilds the networks exactly as the first invocation did and then overwrites them from the checkpoint, so the
resumed run computes bit for bit what the uninterrupted one would have.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from cliplit.train.cache import FeatureTables
from cliplit.train.config import TrainConfig, resume_config, write_config
from cliplit.train.data import DIHEDRAL_SYMMETRIES, list_images
from cliplit.train.distributed import DistContext, setup_distributed
from cliplit.train.logs import RunLog
from cliplit.train.losses import BACKLIT, WELL_LIT
from cliplit.train.models import Models, build_models
from cliplit.train.precision import Precision
from cliplit.train.schedule import needs_identity
from cliplit.train.state import Progress, load_state, restore_rng, save_state

CHECKPOINT = Path("checkpoints") / "last.pt"


class RunState:
    """Models, optimisers, best snapshots, schedule position and outputs of one run (see the module docstring)."""

    def __init__(self, config: TrainConfig, ctx: DistContext, backlit: list[Path], well_lit: list[Path]) -> None:
        self.config, self.ctx, self.device = config, ctx, ctx.device
        self.run_dir = Path(config.out)
        self.backlit, self.well_lit = backlit, well_lit
        self.models: Models = build_models(config, self.device, needs_identity=needs_identity(config))
        self.enhancer_opt = self.new_enhancer_optimizer()
        self.prompt_opt = torch.optim.Adam(
            self.models.prompts.parameters(), lr=config.prompt_lr, weight_decay=config.prompt_weight_decay
        )
        self.best_enhancer = clone_state(self.models.enhancer)
        self.best_prompts = self.models.prompts.embeddings.detach().clone()
        self.precision = Precision(config, self.device)
        self.tables = FeatureTables(
            self.models.image_encoder,
            {BACKLIT: backlit, WELL_LIT: well_lit},
            size=config.prompt_image_size,
            symmetries=DIHEDRAL_SYMMETRIES if config.prompt_augment == "dihedral" else 1,
            device=self.device,
            autocast=self.precision.autocast,
        )
        self.progress = Progress()
        # The trainable modules as the stages call them: DistributedDataParallel under torchrun (set by open_run).
        self.enhancer_ddp: nn.Module = self.models.enhancer
        self.prompts_ddp: nn.Module = self.models.prompts
        self.log: RunLog | None = None

    def new_enhancer_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.Adam(
            self.models.enhancer.parameters(), lr=c.enhancer_lr, weight_decay=c.enhancer_weight_decay
        )

    def labels(self) -> torch.Tensor:
        """Labels of the backlit-then-well-lit image list, from the folders alone: 0 = backlit, 1 = well-lit."""
        return torch.tensor([0] * len(self.backlit) + [1] * len(self.well_lit), device=self.device)

    def should_stop(self) -> bool:
        """True once ``--max-steps`` iterations are done in all."""
        return self.config.max_steps is not None and self.progress.step >= self.config.max_steps

    def say(self, message: str) -> None:
        """Print on the main process, without breaking the progress bar."""
        if self.ctx.is_main:
            tqdm.write(message, file=sys.stderr)

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/last.pt`` (main process only; every rank holds the same state)."""
        if not self.ctx.is_main:
            return
        tensors = {
            "enhancer": clone_state(self.models.enhancer),
            "enhancer_best": self.best_enhancer,
            "prompts": self.models.prompts.embeddings.detach().cpu(),
            "prompts_best": self.best_prompts.cpu(),
            "enhancer_optimizer": self.enhancer_opt.state_dict(),
            "prompt_optimizer": self.prompt_opt.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
        }
        save_state(self.run_dir / CHECKPOINT, self.progress, tensors, self.config.to_dict())

    def restore(self) -> None:
        """Load ``checkpoints/last.pt`` over the freshly built state; refuses a config that would change the run."""
        progress, blob = load_state(self.run_dir / CHECKPOINT)
        resume_config(blob["config"], self.config.to_dict())  # raises if an option that shapes the run changed
        self.progress = progress
        self.models.enhancer.load_state_dict(blob["enhancer"])
        self.best_enhancer = {k: v.to(self.device) for k, v in blob["enhancer_best"].items()}
        self.models.prompts.embeddings.data.copy_(blob["prompts"])
        self.best_prompts = blob["prompts_best"].to(self.device)
        self.enhancer_opt.load_state_dict(blob["enhancer_optimizer"])
        self.prompt_opt.load_state_dict(blob["prompt_optimizer"])
        self.precision.scaler.load_state_dict(blob["scaler"])
        restore_rng(blob["rng"])  # last: building the models drew on the generators

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.ctx.close()


def open_run(config: TrainConfig, *, resume: bool) -> RunState:
    """Check the inputs, build (or rebuild and restore) the state, wrap it for torchrun and open the log."""
    ctx = setup_distributed(config.device)
    # Everything that can fail for a user-fixable reason is checked before any model is built.
    backlit = list_images(config.backlit, "--backlit")
    well_lit = list_images(config.well_lit, "--well-lit")
    run = RunState(config, ctx, backlit, well_lit)
    if resume:
        run.restore()
    run.enhancer_ddp = ctx.wrap(run.models.enhancer)
    run.prompts_ddp = ctx.wrap(run.models.prompts)
    if ctx.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(config, run.run_dir / "config.yaml")
        run.log = RunLog(run.run_dir, resume_step=run.progress.step)
    return run


def clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state dict (a snapshot that later steps do not change)."""
    return {key: value.detach().clone() for key, value in module.state_dict().items()}
