"""Optimizer recipes, one table: name -> optimizer, base lr at its reference batch (scaled linearly
to the global batch), weight decay, betas or momentum, warm-up and LARS's trust coefficient.

trainer/optim.py builds the optimizer from a recipe; every trainer's config (`recipe=NAME`) and
transfer.finetune take their defaults from here, and a config key (base_lr, weight_decay,
warmup_frac) overrides one value. An unknown name is an error listing the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("sgd", "adamw", "lars")
# The pretraining recipes' warm-up: a share of training, not the papers' epochs (SWAG's and MAE's
# 5%). One value for all of them, so choosing another recipe= never keeps a stale warm-up.
PRETRAIN_WARMUP = 0.05


@dataclass(frozen=True)
class Recipe:
    optimizer: str                       # sgd | adamw | lars (timm's LARS: SGD momentum + trust ratio)
    base_lr: float                       # at reference_batch
    reference_batch: int
    weight_decay: float
    warmup_frac: float = PRETRAIN_WARMUP  # linear warm-up from lr/10 over this share of training
    momentum: float = 0.9                # sgd, lars
    nesterov: bool = False               # sgd
    betas: tuple[float, float] = (0.9, 0.95)  # adamw
    trust_coeff: float = 0.001           # lars: eta of the layer-wise trust ratio
    # True: no weight decay (and, for LARS, no trust ratio) on normalization layers, biases and other
    # 1-d parameters; False: one group of every parameter
    exclude_norms_and_biases: bool = True

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")

    def peak_lr(self, global_batch: int, base_lr: float | None = None) -> float:
        """Linear scaling: base lr (this recipe's, or `base_lr`) at reference_batch, scaled to global_batch."""
        return (base_lr if base_lr is not None else self.base_lr) * global_batch / self.reference_batch


RECIPES = {
    # SWAG section 3.2, RegNetY: SGD, Nesterov momentum 0.9, 0.1 per 256, wd 1e-5
    "sgd": Recipe("sgd", 0.1, 256, 1e-5, nesterov=True),
    # SWAG, ViT: AdamW (0.9, 0.95), 4e-4 at 8192, wd 0.1
    "adamw": Recipe("adamw", 4e-4, 8192, 0.1),
    # MAE (He et al. 2022), as MAWS appendix A pre-pretrains: AdamW (0.9, 0.95), 1.5e-4 per 256, wd 0.05
    "mae": Recipe("adamw", 1.5e-4, 256, 0.05),
    # SwAV on ImageNet (Caron et al. 2020, appendix): LARS, momentum 0.9, trust 0.001, lr 4.8 at
    # batch 4096 (0.3 per 256), wd 1e-6: facebookresearch/swav main_swav.py `--wd 1e-6`,
    # scripts/swav_800ep_pretrain.sh `--wd 0.000001 --base_lr 4.8` at 64 GPUs x 64 (VISSL's
    # swav_8node_resnet.yaml: `weight_decay: 0.000001`). SwAV decays and adapts every parameter;
    # here norms and biases are left out, as for the other recipes.
    "swav": Recipe("lars", 0.3, 256, 1e-6),
    # SEER (Goyal et al. 2021, arXiv 2103.01988: SwAV on RegNetY, 1B uncurated Instagram images,
    # batch 8,704 on 512 GPUs, 114,890 steps): the same LARS at 0.3 per 256, wd 1e-5: facebookresearch/
    # vissl configs/config/pretrain/seer/models/regnet10B.yaml (`weight_decay: 0.00001`, lr
    # `base_value: 0.3` per 256) and the released RG-256GF checkpoint's name in projects/SEER/README.md
    # (swav_ig1b_..._wd1e5_..._warmup8k: wd 1e-5, 8k warm-up steps).
    "seer": Recipe("lars", 0.3, 256, 1e-5),
    # LiT's text tower from scratch (Zhai et al. 2022): AdamW, 1e-3 at 16384, wd 1e-4
    "lit": Recipe("adamw", 1e-3, 16384, 1e-4),
    # SWAG section 4.1, finetuning: SGD momentum 0.9, 0.1 at batch 512, no weight decay, no warm-up
    "finetune": Recipe("sgd", 0.1, 512, 0.0, warmup_frac=0.0, exclude_norms_and_biases=False),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[name]


def check_recipe(name: str, allowed: tuple[str, ...], who: str) -> Recipe:
    """The recipe `name`, if it is one of those `who` (an entry point) trains with."""
    if name not in allowed:
        raise ValueError(f"unknown recipe {name!r} for {who}; valid: {', '.join(allowed)}")
    return recipe(name)


def describe(names: tuple[str, ...]) -> str:
    """One line of --help: each recipe's optimizer, lr at its batch and weight decay."""
    return "; ".join(f"{n} ({recipe(n).optimizer} {recipe(n).base_lr:g}/{recipe(n).reference_batch}, "
                     f"wd {recipe(n).weight_decay:g})" for n in names)
