"""Models come only from timm.create_model; heads from an explicit registry."""
from __future__ import annotations

import timm
import torch
from torch import nn

# SWAG: a linear classifier; MAWS: Linear(d, d) - Tanh - Linear(d, C).
HEADS = {
    "linear": lambda d, c: nn.Linear(d, c),
    "mlp": lambda d, c: nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, c)),
}


def create_model(name: str, num_classes: int, head: str = "linear", img_size: int | None = None,
                 drop_path_rate: float = 0.0) -> nn.Module:
    """A timm trunk (random init: no weights are ever downloaded) with the chosen head."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (e.g. regnety_160, vit_base_patch16_224, regnety_002)")
    kw = {"pretrained": False, "num_classes": 0, "drop_path_rate": drop_path_rate}
    if img_size is not None and name.startswith(("vit", "deit", "eva")):
        kw["img_size"] = img_size
    trunk = timm.create_model(name, **kw)
    return Classifier(trunk, HEADS[head](trunk.num_features, num_classes))


class Classifier(nn.Module):
    """trunk (timm, pooled features) + head; `trunk` alone is what transfer uses."""

    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))
