"""Losses against the soft target (1/k on each of an image's k labels), as an explicit registry."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SWAG/WSL: cross-entropy between softmax(logits) and the 1/k target distribution."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def sigmoid_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-label binary cross-entropy on the presence of each label (target > 0)."""
    return F.binary_cross_entropy_with_logits(logits.float(), (target > 0).float(), reduction="mean")


LOSSES = {"softmax": softmax_ce, "bce": sigmoid_bce}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]
