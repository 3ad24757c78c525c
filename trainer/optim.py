"""The optimizer of a recipe (trainer/recipes.py), its parameter groups, and the LR schedule as a
pure function of samples."""
from __future__ import annotations

import math

import torch
from torch import nn

from trainer.recipes import PRETRAIN_WARMUP, recipe


def peak_lr(name: str, global_batch: int, base_lr: float | None = None) -> float:
    """Linear scaling: base lr at the recipe's reference batch, scaled to `global_batch`."""
    return recipe(name).peak_lr(global_batch, base_lr)


def lr_at(samples_seen: int, total_samples: int, peak: float, warmup_frac: float = PRETRAIN_WARMUP,
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


def build_optimizer(name: str, model: nn.Module, lr: float,
                    weight_decay: float | None = None) -> torch.optim.Optimizer:
    """Recipe `name`'s optimizer at `lr` (peak_lr's, or a config's) and `weight_decay` (None: the recipe's)."""
    r = recipe(name)
    weight_decay = r.weight_decay if weight_decay is None else weight_decay
    groups = param_groups(model, weight_decay) if r.exclude_norms_and_biases else \
        [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=r.momentum, nesterov=r.nesterov)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=r.betas)
    # timm's LARS: the trust ratio applies where weight decay does (not norms, biases)
    from timm.optim import Lars

    return Lars(groups, lr=lr, momentum=r.momentum, trust_coeff=r.trust_coeff)
