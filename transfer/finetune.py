r"""Full finetuning on a downstream dataset (SWAG section 4.1), one CPU process to many GPUs.

    torchrun --nproc_per_node=8 -m transfer.finetune model=runs/r16/export data=/data/inat \
        out=runs/r16/finetune_inat.json img_size=384
    python -m transfer.finetune model=build/demo/pretrain/export data=build/demo/downstream \
        out=build/demo/transfer/finetune_pretrained.json img_size=64 steps=40 batch_size=32

The `finetune` recipe of trainer/recipes.py (SWAG's SGD with momentum, no weight decay, no warm-up,
base_lr at its batch scaled linearly), global batch 512, a half-cosine to 0, mixup alpha 0.1,
SyncBatchNorm across GPUs, and an EMA of the weights that is what gets evaluated (the raw weights
are reported too). SWAG finetunes RegNetY and ViT-B at 384 px. Steps follow SWAG's three regimes
by training-set size (steps_for_size: 500 / 10k / 20k), overridable with steps=N. A new linear
head (zero init) replaces the hashtag head.

The loop is trainer.loop's, as for pretraining: checkpoints every ckpt_every steps (the EMA
weights with them), exact resume after a kill (rerun the same command), SIGTERM -> checkpoint ->
exit 0. Run files go to <out without .json>_run/ (config.yaml, metrics.jsonl, tb/, checkpoints/,
export/ of the EMA model); rank 0 evaluates the full val split at the end and writes out (+ .md).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from trainer.config import TrainConfig, key, load_config, to_dict
from trainer.distributed import DistInfo, broadcast_object
from trainer.export import export_model, load_model
from trainer.loop import Task, fit
from trainer.losses import softmax_ce
from trainer.models import Classifier
from trainer.optim import build_optimizer, peak_lr
from trainer.prepare import Run, prepare, start
from trainer.recipes import recipe
from transfer.downstream import ImageSet, Split, load_split
from transfer.ema import ModelEma
from transfer.logreg import top_k
from transfer.mixup import mix, one_hot, sample_lambda
from transfer.protocol import check_out, pct, write_result

log = logging.getLogger("finetune")
RECIPE = "finetune"  # trainer/recipes.py


def steps_for_size(train_images: int) -> int:
    """SWAG's finetuning lengths: 500 steps for small sets, 10k for medium, 20k for large ones
    (our thresholds: under 100k images is small, under 1M medium)."""
    return 500 if train_images < 100_000 else 10_000 if train_images < 1_000_000 else 20_000


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(TrainConfig):
    model: str = key(help="export directory, or random:<timm name>")
    data: str = key(help="downstream dataset (transfer/downstream.py)")
    out: str = key(help="result JSON (+ .md); run files in <out stem>_run/")
    steps: int | None = key(None, "training steps; null: steps_for_size(train images), SWAG's 500 / 10k / 20k")
    batch_size: int = key(512, "global batch, split evenly over the processes")
    base_lr: float = key(recipe(RECIPE).base_lr, f"lr at batch {recipe(RECIPE).reference_batch}, scaled linearly")
    warmup_frac: float = key(recipe(RECIPE).warmup_frac, "share of training with a linear lr warm-up (from lr/10)")
    sync_bn: bool = key(True, "SyncBatchNorm across GPU processes (PyTorch has no CPU kernel for it)")
    mixup_alpha: float = key(0.1, "mixup Beta(alpha, alpha); 0: off")
    ema_decay: float = key(0.999, "decay of the EMA of the weights that is evaluated")
    eval_batch_size: int = key(64, "batch of the final evaluation")

    def __post_init__(self):
        super().__post_init__()
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.mixup_alpha < 0 or not 0 <= self.ema_decay < 1 or self.eval_batch_size < 1:
            raise ValueError(f"need mixup_alpha >= 0, ema_decay in [0, 1), eval_batch_size >= 1; got "
                             f"{self.mixup_alpha}, {self.ema_decay}, {self.eval_batch_size}")
        check_out(self.out)

    @property
    def run_dir(self) -> Path:
        stem = Path(self.out).with_suffix("")
        return stem.with_name(stem.name + "_run")


class SeededImages(Dataset):
    """The training images, each augmented with a torch RNG seeded from (seed, epoch, index): the
    same crops whatever the loader workers, world size or resume point."""

    def __init__(self, images: ImageSet, seed: int):
        self.images, self.seed, self.epoch = images, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        state = np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1, np.uint64)[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(state >> np.uint64(1)))
            return self.images[i]


class StartSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (at index `start` of the rank's order),
    so a resumed run loads nothing it already trained on."""
    start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return super().__len__() - self.start


class FinetuneBatch(NamedTuple):
    images: torch.Tensor   # uint8 [B, 3, S, S]
    labels: torch.Tensor   # int64 [B]
    skipped: tuple = ()    # a downstream image that does not load fails the run: nothing is dropped


def collate(samples: list) -> FinetuneBatch:
    return FinetuneBatch(*default_collate(samples))


class FinetuneLoader(DataLoader):
    """This rank's batches (DistributedSampler: every rank the same number), a
    trainer.data.protocol.TrainLoader: set_epoch(e[, start]) before each epoch reshuffles with
    (seed, e), redraws the augmentations and starts at batch start.

    Global batch j is samples [j * B, (j + 1) * B) of the epoch's one global permutation (rank r
    takes every world-th of them), each augmented from (seed, epoch, index): the same samples and
    crops on any number of processes, so a run resumes on another world size with the same global
    batch (fit checks the global batch). BatchNorm statistics and mixup pairs are per process:
    only without them does the resumed curve equal the uninterrupted one to float rounding."""
    order_depends_on = ()  # neither the world size nor the loader workers change the global batches

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.sampler.start = start * self.batch_size
        self.dataset.epoch = epoch  # workers start per epoch (not persistent) and see it

    def epoch_batches(self, epoch: int) -> int:
        return DistributedSampler.__len__(self.sampler) // self.batch_size

    def epoch_stats(self, epoch: int) -> dict:
        n = len(self.dataset)
        return {"samples": n, "dropped": n - self.epoch_batches(epoch) * self.batch_size * self.sampler.num_replicas}


def finetune_loader(split: Split, cfg: FinetuneConfig, d: DistInfo) -> FinetuneLoader:
    images = SeededImages(ImageSet(split, cfg.img_size, train=True), cfg.seed)
    sampler = StartSampler(images, d.world_size, d.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    # a generator of its own: DataLoader would draw its worker seeds from the global RNG otherwise
    loader = FinetuneLoader(images, batch_size=cfg.batch_size // d.world_size, sampler=sampler,
                            num_workers=cfg.workers, drop_last=True, collate_fn=collate,
                            generator=torch.Generator().manual_seed(cfg.seed * 1000 + d.rank))
    if len(loader) == 0:
        raise ValueError(f"{cfg.data}: {len(split)} training images, fewer than one global batch of "
                         f"{cfg.batch_size}: lower batch_size")
    return loader


class FinetuneTask(Task):
    """Mixup (lam drawn from (seed, rank, step), so nothing to checkpoint) and soft-target
    cross-entropy; the EMA of the weights is updated after every step and checkpointed."""

    def __init__(self, cfg: FinetuneConfig, run: Run, num_classes: int):
        self.cfg, self.run, self.num_classes = cfg, run, num_classes
        self.ema = ModelEma(run.model, cfg.ema_decay)

    def loss(self, batch: FinetuneBatch, step):
        x = self.run.inputs(batch.images)
        lam = sample_lambda(self.cfg.mixup_alpha, np.random.default_rng([self.cfg.seed, self.run.d.rank, step]))
        x, t = mix(x, one_hot(batch.labels, self.num_classes).to(x.device), lam)
        with self.run.autocast():
            return softmax_ce(self.run.net(x), t)

    def after_step(self, step):
        self.ema.update(self.run.model)

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["ema"])


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, run: Run, batch_size: int) -> dict:
    model.eval()
    scores, labels = [], []
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
        scores.append(model(run.inputs(x)).float().cpu())
        labels.append(y)
    s, y = torch.cat(scores), torch.cat(labels)
    return {"top1": top_k(s, y, 1), "top5": top_k(s, y, 5)}


def report(cfg: FinetuneConfig, run: Run, task: FinetuneTask, loaded, train_split: Split, val_split: Split,
           steps: int, peak: float) -> dict:
    """Rank 0, after the last step: both weights on the val split, the EMA export, out (+ .md)."""
    classes = train_split.classes
    val = ImageSet(val_split, cfg.img_size)
    ema_acc = evaluate(task.ema.module, val, run, cfg.eval_batch_size)
    raw_acc = evaluate(run.model, val, run, cfg.eval_batch_size)
    losses = [json.loads(x)["loss"] for x in (run.run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    result = {"protocol": "finetune", "model": cfg.model, "arch": loaded.name, "model_key": loaded.key,
              "data": cfg.data, "img_size": cfg.img_size, "classes": list(classes), "train_images": len(train_split),
              "val_images": len(val_split), "steps": steps, "batch_size": cfg.batch_size, "peak_lr": peak,
              "world_size": run.d.world_size, "sync_bn": run.sync_bn, "top1": ema_acc["top1"],
              "top5": ema_acc["top5"], "top1_raw": raw_acc["top1"], "top5_raw": raw_acc["top5"],
              "loss_first": losses[0], "loss_last": losses[-1], "run_dir": str(run.run_dir)}
    export_model(task.ema.module, run.run_dir / "export", {
        "model": loaded.name, "head": "linear", "num_classes": len(classes), "labels": list(classes),
        "img_size": cfg.img_size, "input_size": [3, cfg.img_size, cfg.img_size], "mean": list(loaded.mean),
        "std": list(loaded.std), "config": to_dict(cfg)})
    md = (f"## Finetune: {cfg.model}\n\n{steps} steps at batch {cfg.batch_size} on {run.d.world_size} process(es), "
          f"{cfg.img_size} px: EMA top-1 {pct(ema_acc['top1'])} (top-5 {pct(ema_acc['top5'])}), raw weights "
          f"top-1 {pct(raw_acc['top1'])}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    write_result(cfg, result, md)
    print(md)
    return result


def train(cfg: FinetuneConfig) -> dict:
    d = start(cfg)
    train_split, val_split = load_split(cfg.data, "train"), load_split(cfg.data, "val")
    steps = cfg.steps or steps_for_size(len(train_split))
    loader = finetune_loader(train_split, cfg, d)
    loaded = load_model(cfg.model, cfg.img_size, cfg.seed)
    torch.manual_seed(cfg.seed)  # the same head on every rank (DDP also broadcasts rank 0's weights)
    head = nn.Linear(loaded.trunk.num_features, len(train_split.classes))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    peak = peak_lr(RECIPE, cfg.batch_size, cfg.base_lr)
    run = prepare(cfg, d, Classifier(loaded.trunk, head), lambda m: build_optimizer(RECIPE, m, peak),
                  cfg.run_dir, loaded.mean, loaded.std)
    task = FinetuneTask(cfg, run, len(train_split.classes))
    fitted = fit(cfg, run, task, loader, steps, peak)
    if fitted["stopped"]:  # preempted: the checkpoint is written; rerun the same command to go on
        result = {**fitted, "run_dir": str(run.run_dir)}
    else:
        result = broadcast_object(report(cfg, run, task, loaded, train_split, val_split, steps, peak)
                                  if d.is_main else None)
    run.close()
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return train(load_config(FinetuneConfig, argv, "transfer.finetune", __doc__))


if __name__ == "__main__":
    main()
