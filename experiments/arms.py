"""The arms of `make compare` (SWAG section 5's comparison; MAWS's): what each pretrains, in
stages, with which trainer and config, and which share of the equal compute budget each stage
gets. Arms compared with each other share an architecture (a family). An arm without stages is
its family's random initialisation, evaluated as is."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    trainer: str                 # torchrun -m <trainer>
    config: str                  # its --config
    share: float                 # of the arm's budget
    init_from_previous: bool = False  # init_from=<the previous stage's export> (MAWS)


@dataclass(frozen=True)
class Arm:
    family: str
    random: str                  # the family's timm trunk (the random arm's model=random:<name>)
    stages: tuple[Stage, ...] = ()


REGNET, VIT = "regnety_002", "vit_tiny_patch16_224"
HASHTAG_REGNET = "trainer/configs/demo_cpu.yaml"
SWAV_REGNET = "trainer/configs/swav_regnety_demo_cpu.yaml"
HASHTAG_VIT = "trainer/configs/demo_vit_cpu.yaml"
MAE_VIT = "trainer/configs/mae_demo_cpu.yaml"


def demo_arms(mae_share: float = 0.5) -> dict[str, Arm]:
    """The demo's arms: SWAG vs SEER vs none on RegNetY, MAWS vs SWAG vs none on ViT; in the
    MAWS arm MAE gets `mae_share` of the budget, hashtag pretraining from its encoder the rest."""
    if not 0 < mae_share < 1:
        raise ValueError(f"mae_share must be in (0, 1), got {mae_share}")
    return {
        "hashtag": Arm("regnety", REGNET, (Stage("trainer.pretrain", HASHTAG_REGNET, 1.0),)),
        "swav": Arm("regnety", REGNET, (Stage("trainer.swav", SWAV_REGNET, 1.0),)),
        "random": Arm("regnety", REGNET),
        "vit_mae_hashtag": Arm("vit", VIT, (Stage("trainer.mae", MAE_VIT, mae_share),
                                            Stage("trainer.pretrain", HASHTAG_VIT, 1 - mae_share, True))),
        "vit_hashtag": Arm("vit", VIT, (Stage("trainer.pretrain", HASHTAG_VIT, 1.0),)),
        "vit_random": Arm("vit", VIT),
    }


def pairs(arms: dict[str, Arm]) -> list[tuple[str, str]]:
    """Every pair of arms of one family, in the registry's order (a before b: each family lists
    its paper's method first, so a - b > 0 is the paper's claim)."""
    names = list(arms)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if arms[a].family == arms[b].family]


def samples_for(budget_cpu_s: float, share: float, step_cpu_s: float, batch: int) -> int:
    """Training samples a stage gets: whole global batches within share x budget CPU seconds of
    measured step cost (at least one batch)."""
    if budget_cpu_s <= 0 or step_cpu_s <= 0 or batch < 1:
        raise ValueError(f"need budget > 0, step cost > 0, batch >= 1; got {budget_cpu_s}, {step_cpu_s}, {batch}")
    return max(1, int(share * budget_cpu_s / step_cpu_s)) * batch
