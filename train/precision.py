"""Mixed precision for the frozen CLIP towers, and the optimiser step that goes with it.

The towers run under autocast when asked (``--amp``); the enhancer, the light-map division and every loss stay in
FP32. FP16 autocast needs a gradient scaler, bfloat16 does not; one ``update`` serves both.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from cliplit.train.config import TrainConfig


class Precision:
    """The autocast context of the CLIP towers and the (possibly scaled) optimiser step."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.device_type = device.type
        self.enabled = config.amp == "on" or (config.amp == "auto" and device.type == "cuda")
        self.dtype = torch.bfloat16 if config.amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One optimiser step on ``loss``."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
