"""torchrun support: one process per GPU with DistributedDataParallel; a single process otherwise.

A process group is set up when torchrun launched several processes (WORLD_SIZE > 1), or used as is when the caller
already initialised one. Rank 0 alone writes files and shows progress; every rank computes the same schedule, and
losses that steer it (best model, stage extensions) are averaged over ranks so all ranks take the same decisions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cliplit.core.errors import CliplitError


@dataclass(frozen=True)
class DistContext:
    """Where this process runs and which part of the work is its own."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def enabled(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """The trainable module as DDP when distributed (gradients all-reduced), else unchanged."""
        if not self.enabled:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks."""
        if not self.enabled or self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def barrier(self) -> None:
        if self.enabled and self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and self.enabled:
            dist.destroy_process_group()


def setup_distributed(device: str) -> DistContext:
    """Join torchrun's process group if there is one and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        owns = True
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    return DistContext(rank, world, _pick_device(device, world), owns)


def _pick_device(device: str, world: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CliplitError(f"--device {device}: CUDA is not available on this machine")
        if world > 1 or device == "cuda":
            index = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else torch.cuda.current_device()
            device = f"cuda:{index}"
        torch.cuda.set_device(torch.device(device))
    return torch.device(device)
