"""Exponential moving average of a model's weights, used for evaluation after finetuning (SWAG 4.1).

After update t (counting from 0) every floating-point parameter and buffer is
    ema = d_t * ema + (1 - d_t) * value,   d_t = min(decay, (1 + t) / (10 + t))
(the warm-up keeps early, random weights from dominating a short run); integer buffers such as
BatchNorm's num_batches_tracked are copied.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        t = self.updates
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            e = ema_state[name]
            if e.dtype.is_floating_point:
                e.mul_(d).add_(value.detach().to(e.dtype), alpha=1 - d)
            else:
                e.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        """The averaged weights and the update count (the warm-up depends on it): what a
        checkpoint needs to continue the average exactly."""
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
