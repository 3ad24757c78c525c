"""SWAG and MAE optimizer recipes, parameter groups and the LR schedule as a pure function of samples."""
from __future__ import annotations

import math

import torch
from torch import nn

# name -> (base lr, at reference batch). "mae": He et al.'s AdamW recipe (1.5e-4 per 256, betas
# (0.9, 0.95), wd 0.05), used by trainer.mae (MAWS appendix A). "lars": SEER's and SwAV's LARS
# (0.3 per 256, i.e. 4.8 at 4096; momentum 0.9, trust coefficient 0.001), used by trainer.swav.
# "lit": AdamW for LiT's text tower trained from scratch (1e-3 at 16384; Zhai et al. 2022), trainer.lit.
RECIPES = {"sgd": (0.1, 256), "adamw": (4e-4, 8192), "mae": (1.5e-4, 256), "lars": (0.3, 256), "lit": (1e-3, 16384)}


def peak_lr(optimizer: str, global_batch: int, base_lr: float | None = None) -> float:
    """Linear scaling: base lr at the recipe's reference batch, scaled to `global_batch`."""
    if optimizer not in RECIPES:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(RECIPES)}")
    lr, ref = RECIPES[optimizer]
    return (base_lr if base_lr is not None else lr) * global_batch / ref


def lr_at(samples_seen: int, total_samples: int, peak: float, warmup_frac: float = 0.05,
          warmup_start: float = 0.1) -> float:
    """Linear warm-up from peak*warmup_start over the first warmup_frac of training, then a
    half-cosine from peak to 0 at total_samples."""
    if total_samples <= 0:
        raise ValueError("total_samples must be > 0")
    s = min(max(samples_seen, 0), total_samples)
    warm = warmup_frac * total_samples
    if warm > 0 and s < warm:
        return peak * (warmup_start + (1 - warmup_start) * s / warm)
    progress = (s - warm) / max(1e-12, total_samples - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on normalization layers and biases (and 1-d params such as ViT's tokens)."""
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    no_decay = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, norm_types) or name == "bias" or p.ndim <= 1:
                no_decay.add(id(p))
    decay = [p for p in model.parameters() if p.requires_grad and id(p) not in no_decay]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) in no_decay]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name in ("adamw", "mae", "lit"):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    if name == "lars":  # timm's LARS; the trust ratio applies where weight decay does (not norms, biases)
        from timm.optim import Lars

        return Lars(groups, lr=lr, momentum=0.9, trust_coeff=0.001)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(RECIPES)}")
