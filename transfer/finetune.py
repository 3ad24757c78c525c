"""Full finetuning on a downstream dataset (SWAG section 4.1), one CPU process to many GPUs.

    torchrun --nproc_per_node=8 -m transfer.finetune model=runs/r16/export data=/data/inat \
        out=runs/r16/finetune_inat.json img_size=384
    python -m transfer.finetune model=build/demo/pretrain/export data=build/demo/downstream \
        out=build/demo/transfer/finetune_pretrained.json img_size=64 steps=40 batch_size=32

SGD (momentum 0.9), global batch 512 with the lr scaled linearly from base_lr at 512, a half-cosine
to 0, no weight decay, mixup alpha 0.1, SyncBatchNorm across GPUs, and an EMA of the weights that
is what gets evaluated (the raw weights are reported too). Steps follow SWAG's three regimes by
training-set size (steps_for_size: 500 / 10k / 20k), overridable with steps=N. A new linear head
(zero init) replaces the hashtag head. Run files go to <out without .json>_run/ (metrics.jsonl,
tb/, export/ of the EMA model); rank 0 evaluates the full val split at the end.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from trainer.checkpoint import unwrap
from trainer.config import load_config, to_dict
from trainer.distributed import DistInfo, all_reduce_mean, broadcast_object, cleanup_distributed, setup_distributed
from transfer.downstream import ImageSet, load_split
from transfer.ema import ModelEma
from trainer.export import export_model
from trainer.export import load_model
from transfer.logreg import top_k
from trainer.losses import softmax_ce
from trainer.run_log import MetricsLog, Progress
from transfer.mixup import mix, one_hot, sample_lambda
from trainer.models import Classifier
from trainer.optim import lr_at
from transfer.protocol import pct, write_result
from trainer.runtime import autocast

log = logging.getLogger("finetune")
REFERENCE_BATCH = 512


def steps_for_size(train_images: int) -> int:
    """SWAG's finetuning lengths: 500 steps for small sets, 10k for medium, 20k for large ones
    (our thresholds: under 100k images is small, under 1M medium)."""
    return 500 if train_images < 100_000 else 10_000 if train_images < 1_000_000 else 20_000


@dataclass(frozen=True)
class FinetuneConfig:
    model: str                        # export directory, or random:<timm name>
    data: str                         # downstream dataset (transfer/downstream.py)
    out: str                          # result JSON (+ .md); run files in <out stem>_run/
    img_size: int = 224               # SWAG finetunes RegNetY and ViT-B at 384
    steps: int | None = None          # None: steps_for_size(train images)
    batch_size: int = 512             # global
    base_lr: float = 0.1              # at batch 512, scaled linearly
    mixup_alpha: float = 0.1
    ema_decay: float = 0.999
    sync_bn: bool = True              # GPU only: PyTorch's SyncBatchNorm has no CPU kernel
    precision: str = "auto"
    workers: int = 2
    eval_batch_size: int = 64
    log_every: int = 10
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1 or self.base_lr <= 0:
            raise ValueError(f"need batch_size >= 1 and base_lr > 0, got {self.batch_size}, {self.base_lr}")
        if not str(self.out).endswith(".json"):
            raise ValueError(f"out must be a .json path, got {self.out!r}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")


def forever(loader: DataLoader, sampler: DistributedSampler):
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, mean, std, batch_size: int, device) -> dict:
    model.eval()
    scores, labels = [], []
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
        scores.append(model(x.to(device).float().sub_(mean).div_(std)).float().cpu())
        labels.append(y)
    s, y = torch.cat(scores), torch.cat(labels)
    return {"top1": top_k(s, y, 1), "top5": top_k(s, y, 5)}


def train(cfg: FinetuneConfig) -> dict:
    d: DistInfo = setup_distributed(cfg.device)
    if cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {d.world_size}")
    train_split, val_split = load_split(cfg.data, "train"), load_split(cfg.data, "val")
    classes = train_split.classes
    steps = cfg.steps or steps_for_size(len(train_split))
    loaded = load_model(cfg.model, cfg.img_size, cfg.seed)
    torch.manual_seed(cfg.seed)  # the same head on every rank (DDP also broadcasts rank 0's weights)
    head = nn.Linear(loaded.trunk.num_features, len(classes))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model = Classifier(loaded.trunk, head).to(d.device)
    sync_bn = cfg.sync_bn and d.world_size > 1 and d.device.type == "cuda"
    if cfg.sync_bn and d.world_size > 1 and not sync_bn and d.is_main:
        log.warning("SyncBatchNorm needs GPUs: each of the %d CPU processes normalises its own batch", d.world_size)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = ModelEma(model, cfg.ema_decay)
    peak = cfg.base_lr * cfg.batch_size / REFERENCE_BATCH
    optimizer = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9, weight_decay=0.0)
    net = nn.parallel.DistributedDataParallel(model) if d.world_size > 1 else model
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if d.device.type == "cuda" else "fp32")
    mean = torch.tensor(loaded.mean, device=d.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(loaded.std, device=d.device).view(1, 3, 1, 1) * 255
    per_rank = cfg.batch_size // d.world_size
    sampler = DistributedSampler(ImageSet(train_split, cfg.img_size, train=True), d.world_size, d.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(sampler.dataset, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers,
                        drop_last=True, generator=torch.Generator().manual_seed(cfg.seed * 1000 + d.rank))
    if len(loader) == 0:
        raise ValueError(f"{cfg.data}: {len(train_split)} training images, fewer than one global batch of "
                         f"{cfg.batch_size}: lower batch_size")
    run_dir = Path(cfg.out).with_suffix("")
    run_dir = run_dir.with_name(run_dir.name + "_run")
    metrics = MetricsLog(run_dir, d.is_main)
    progress = Progress(steps * cfg.batch_size, 0, d.is_main)
    rng = np.random.default_rng([cfg.seed, d.rank])
    torch.manual_seed(cfg.seed * 1000 + d.rank)  # augmentations in the main process (workers=0)
    losses = []
    net.train()
    batches = forever(loader, sampler)
    for step in range(steps):
        x, y = next(batches)
        lr = lr_at(step * cfg.batch_size, steps * cfg.batch_size, peak, warmup_frac=0.0)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x = x.to(d.device, non_blocking=True).float().sub_(mean).div_(std)
        x, t = mix(x, one_hot(y, len(classes)).to(d.device), sample_lambda(cfg.mixup_alpha, rng))
        with autocast(d.device, precision):
            loss = softmax_ce(net(x), t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(unwrap(model))
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            value = all_reduce_mean(loss.detach()).item()
            losses.append(value)
            rate = progress.update(cfg.log_every * cfg.batch_size, (step + 1) * cfg.batch_size, value, lr)
            metrics.log({"step": step + 1, "samples": (step + 1) * cfg.batch_size, "loss": value, "lr": lr,
                         "img_per_s": rate})
    progress.close()
    metrics.close()
    result = None
    if d.is_main:
        val = ImageSet(val_split, cfg.img_size)
        ema_acc = evaluate(ema.module, val, mean, std, cfg.eval_batch_size, d.device)
        raw_acc = evaluate(unwrap(model), val, mean, std, cfg.eval_batch_size, d.device)
        result = {"protocol": "finetune", "model": cfg.model, "arch": loaded.name, "model_key": loaded.key,
                  "data": cfg.data,
                  "img_size": cfg.img_size, "classes": list(classes), "train_images": len(train_split),
                  "val_images": len(val_split), "steps": steps, "batch_size": cfg.batch_size, "peak_lr": peak,
                  "world_size": d.world_size, "sync_bn": sync_bn, "top1": ema_acc["top1"], "top5": ema_acc["top5"],
                  "top1_raw": raw_acc["top1"], "top5_raw": raw_acc["top5"], "loss_first": losses[0],
                  "loss_last": losses[-1], "run_dir": str(run_dir)}
        export_model(ema.module, run_dir / "export", {
            "model": loaded.name, "head": "linear", "num_classes": len(classes), "labels": list(classes),
            "img_size": cfg.img_size, "input_size": [3, cfg.img_size, cfg.img_size], "mean": list(loaded.mean),
            "std": list(loaded.std), "config": to_dict(cfg)})
        md = (f"## Finetune: {cfg.model}\n\n{steps} steps at batch {cfg.batch_size} on {d.world_size} process(es), "
              f"{cfg.img_size} px: EMA top-1 {pct(ema_acc['top1'])} (top-5 {pct(ema_acc['top5'])}), raw weights "
              f"top-1 {pct(raw_acc['top1'])}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        write_result(cfg, result, md)
        print(md)
    result = broadcast_object(result)
    cleanup_distributed()
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return train(load_config(FinetuneConfig, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
