"""Models come only from timm.create_model; heads from an explicit registry.

Training uses `Classifier(trunk, head)`: `trunk` is the timm model with num_classes=0 (pooled
features, what transfer uses), `head` our registry's head. An export holds the timm model itself
(`timm_model`): a linear head is timm's own classifier (e.g. RegNet's head.fc, ViT's head), so
the export is what `timm.create_model(name, num_classes=C)` builds; `from_timm` splits it back.
"""
from __future__ import annotations

import timm
import torch
from timm.models import get_model_args
from torch import nn

# SWAG: a linear classifier; MAWS: Linear(d, d) - Tanh - Linear(d, C); SwAV: an MLP projection and
# C prototypes (trainer/swav/head.py; its hidden/dim are `head_args`, recorded in the export).
HEADS = {
    "linear": lambda d, c: nn.Linear(d, c),
    "mlp": lambda d, c: nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, c)),
    "swav": lambda d, c, **kw: _swav_head(d, c, **kw),
}


def _swav_head(d: int, c: int, **kw) -> nn.Module:
    from trainer.swav.head import SwavHead  # trainer.swav imports this module

    return SwavHead(d, c, **kw)


def create_model(name: str, num_classes: int, head: str = "linear", img_size: int | None = None,
                 drop_path_rate: float = 0.0, head_args: dict | None = None,
                 dynamic_img_size: bool = False) -> nn.Module:
    """A timm trunk (random init: no weights are ever downloaded) with the chosen head.
    dynamic_img_size: a ViT that takes any input side (SwAV's multi-crop); other trunks pool
    globally and take any side anyway."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (e.g. regnety_160, vit_base_patch16_224, regnety_002)")
    kw = {"pretrained": False, "num_classes": 0, "drop_path_rate": drop_path_rate}
    if img_size is not None and name.startswith(("vit", "deit", "eva")):
        kw["img_size"] = img_size
        if dynamic_img_size:
            kw["dynamic_img_size"] = True
    trunk = timm.create_model(name, **kw)
    return Classifier(trunk, HEADS[head](trunk.num_features, num_classes, **(head_args or {})))


class Classifier(nn.Module):
    """trunk (timm, pooled features) + head; `trunk` alone is what transfer uses."""

    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def architecture(trunk: nn.Module) -> str:
    return trunk.pretrained_cfg["architecture"]


def timm_model(model: Classifier) -> nn.Module:
    """A fresh CPU timm model holding `model`'s weights: with a linear head, the architecture built
    with num_classes=C and the head in timm's classifier (`get_classifier()`); with any other head,
    the trunk alone (num_classes=0). Built from the trunk's recorded arguments (img_size, ...),
    as timm's `local-dir:` loader rebuilds it; every tensor must find its place."""
    trunk, head = model.trunk, model.head
    linear = isinstance(head, nn.Linear)
    args = {k: v for k, v in get_model_args(trunk).items() if k != "num_classes"}
    name = architecture(trunk)
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten: leave the caller's RNG alone
        out = timm.create_model(name, pretrained=False, num_classes=head.out_features if linear else 0, **args)
    state = {k: v.detach().cpu() for k, v in trunk.state_dict().items()}
    if linear:
        clf = out.get_classifier()
        where = next(n for n, m in out.named_modules() if m is clf)
        state.update({f"{where}.{k}": v.detach().cpu() for k, v in head.state_dict().items()})
    try:
        out.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{name}: the trained weights do not fit timm's {name}"
                         f"{f' with {head.out_features} classes' if linear else ''}: {e}") from None
    return out.eval()


def from_timm(model: nn.Module, head: nn.Module | None = None) -> Classifier:
    """The Classifier of a timm model: no `head` given, timm's classifier becomes the (linear)
    head and the model, reset to num_classes=0, the trunk; else `model` is the trunk."""
    if head is None:
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ValueError(f"{architecture(model)}: timm's classifier is {type(head).__name__}, not a linear head")
        model.reset_classifier(0)
    return Classifier(model, head)
