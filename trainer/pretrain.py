r"""Hashtag pretraining of a timm model on the shards (SWAG section 3.2; MAWS appendix).

    torchrun --nproc_per_node=8 -m trainer.pretrain --config trainer/configs/regnety_16gf.yaml \
        shards=/data/shards run_dir=runs/r16 [key=value ...]
    python -m trainer.pretrain --config trainer/configs/demo_cpu.yaml   # one CPU process

Training length is a number of samples; the LR is a pure function of samples seen. A run
directory holds config.yaml, metrics.jsonl, tb/, checkpoints/, curves.png and the export.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.config import ShardTrainConfig, key, load_config, to_dict
from trainer.data import make_loader, model_data_config
from trainer.data.shard_set import ShardSet, load_shard_set
from trainer.distributed import DistInfo
from trainer.export import export_model
from trainer.loop import Task, finish, fit, train_loader
from trainer.losses import LOSSES, get_loss
from trainer.models import HEADS, create_model
from trainer.optim import build_optimizer, peak_lr
from trainer.prepare import Run, prepare, start
from trainer.recipes import RECIPES, check_recipe, describe

log = logging.getLogger("pretrain")
ALLOWED_RECIPES = tuple(n for n in RECIPES if n != "finetune")


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(ShardTrainConfig):
    model: str = key("regnety_002", "timm model name")
    head: str = key("linear", f"hashtag head: {' | '.join(HEADS)}")
    vocab: str | None = key(None, "vocab directory: its label names go into the export (class count must match)")
    loss: str = key("softmax", f"{' | '.join(LOSSES)}")
    recipe: str = key("sgd", f"optimizer recipe (trainer/recipes.py; base_lr is at its batch): "
                             f"{describe(ALLOWED_RECIPES)}")
    weight_decay: float | None = key(None, "null: the recipe's (none on norms and biases)")
    init_from: str | None = key(None, "an MAE encoder export to start from (MAWS)")

    def __post_init__(self):
        super().__post_init__()
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        check_recipe(self.recipe, ALLOWED_RECIPES, "trainer.pretrain")


def read_vocab_names(vocab_dir: str, num_classes: int) -> list[str]:
    import pyarrow.parquet as pq

    rows = sorted(pq.read_table(Path(vocab_dir) / "vocab.parquet", columns=["label", "name"]).to_pylist(),
                  key=lambda r: r["label"])
    if len(rows) != num_classes:
        raise ValueError(f"vocabulary {vocab_dir} has {len(rows)} labels but the shards have {num_classes} classes")
    return [r["name"] for r in rows]


def setup(cfg: PretrainConfig, d: DistInfo):
    """Everything checked before any work: data, vocabulary, model."""
    import timm

    if not timm.is_model(cfg.model):
        raise ValueError(f"unknown timm model {cfg.model!r}")
    shard_set = load_shard_set(cfg.shards)
    names = read_vocab_names(cfg.vocab, shard_set.num_classes) if cfg.vocab else None
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = create_model(cfg.model, shard_set.num_classes, cfg.head, cfg.img_size)
    if cfg.init_from:
        from trainer.mae.init_from import load_encoder

        load_encoder(model.trunk, cfg.init_from)
    return shard_set, names, model


class HashtagTask(Task):
    """Soft-target loss of the model's logits; the class count and label names ride along in
    every checkpoint."""

    def __init__(self, cfg: PretrainConfig, run: Run, shard_set: ShardSet, names: list[str] | None):
        self.run, self.loss_fn, self.shard_set, self.names = run, get_loss(cfg.loss), shard_set, names
        self.info = {"num_classes": shard_set.num_classes, "labels": names or []}

    def loss(self, batch, step):
        x = self.run.inputs(batch.images)
        with self.run.autocast():
            return self.loss_fn(self.run.net(x), batch.targets.to(self.run.d.device, non_blocking=True))

    def state_dict(self) -> dict:
        return self.info


def build(cfg: PretrainConfig, d: DistInfo, run_dir: Path):
    """(run, task, loader, peak lr) of a hashtag run, prepared (resumed where run_dir has a
    checkpoint); experiments/step_cost.py times the task's steps from here."""
    shard_set, names, model = setup(cfg, d)
    loader = train_loader(cfg, d, make_loader)  # looked up here: bench/trainer_bench.py swaps it
    data_cfg = model_data_config(cfg.model)
    peak = peak_lr(cfg.recipe, cfg.batch_size, cfg.base_lr)
    run = prepare(cfg, d, model, lambda m: build_optimizer(cfg.recipe, m, peak, cfg.weight_decay), run_dir,
                  data_cfg.mean, data_cfg.std)
    return run, HashtagTask(cfg, run, shard_set, names), loader, peak


def train(cfg: PretrainConfig) -> dict:
    d = start(cfg)
    run_dir = Path(cfg.run_dir)
    run, task, loader, peak = build(cfg, d, run_dir)
    result = fit(cfg, run, task, loader, cfg.steps, peak)
    shard_set, names, data_cfg = task.shard_set, task.names, model_data_config(cfg.model)
    return finish(run, result, lambda: export_model(run.model, run_dir / "export", {
        "model": cfg.model, "head": cfg.head, "num_classes": shard_set.num_classes, "labels": names or [],
        "img_size": cfg.img_size, "input_size": [3, cfg.img_size, cfg.img_size], "mean": list(data_cfg.mean),
        "std": list(data_cfg.std), "config": to_dict(cfg)}))

def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return train(load_config(PretrainConfig, argv, "trainer.pretrain", __doc__))


if __name__ == "__main__":
    main()
