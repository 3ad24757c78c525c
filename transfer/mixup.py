"""Mixup (Zhang et al. 2018) as used for finetuning in SWAG (alpha 0.1).

A batch is mixed with itself reversed: x' = lam * x + (1 - lam) * x.flip(0), and the same for the
one-hot targets, with lam ~ Beta(alpha, alpha) drawn once per batch from a seeded generator.
"""
from __future__ import annotations

import numpy as np
import torch


def sample_lambda(alpha: float, rng: np.random.Generator) -> float:
    """lam ~ Beta(alpha, alpha); alpha = 0 turns mixup off (lam = 1)."""
    if alpha < 0:
        raise ValueError(f"mixup alpha must be >= 0, got {alpha}")
    return 1.0 if alpha == 0 else float(rng.beta(alpha, alpha))


def mix(x: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lam * x + (1 - lam) * x reversed along the batch, the same for targets [B, C])."""
    return lam * x + (1 - lam) * x.flip(0), lam * targets + (1 - lam) * targets.flip(0)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()
