"""The training loop shared by trainer.pretrain and trainer.mae: resume, LR schedule, steps,
metrics, progress, checkpoints and preemption. Each entry point only says how a batch becomes a loss.

`cfg` is the entry point's frozen config; the loop reads the keys both share: run_dir, shards,
data_format, img_size, batch_size, total_samples (and .steps), warmup_frac, grad_clip, workers,
seed, log_every, ckpt_every, keep_ckpts.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from trainer.checkpoint import load_latest, save_checkpoint, unwrap
from trainer.config import to_dict
from trainer.data import Batch, make_loader
from trainer.distributed import DistInfo, all_reduce_mean
from trainer.run_log import MetricsLog, Progress
from trainer.optim import lr_at
from trainer.runtime import StopFlag

log = logging.getLogger("trainer")


def resume(run_dir: Path, model: torch.nn.Module, optimizer, scaler, d: DistInfo) -> int:
    """Loads the newest readable checkpoint of run_dir (model, optimizer, scaler, CPU RNG) and
    returns its step; 0 when there is none."""
    state = load_latest(run_dir / "checkpoints")
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if d.is_main:
        log.warning("resumed from %s at step %d", state["_path"], state["step"])
    return state["step"]


def train_loader(cfg, d: DistInfo, make=make_loader):
    """This rank's training loader: its share of every global batch of cfg.batch_size."""
    return make(cfg.data_format, cfg.shards, batch_size=cfg.batch_size // d.world_size, rank=d.rank,
                world_size=d.world_size, num_workers=cfg.workers, train=True, size=cfg.img_size, seed=cfg.seed)


def fit(cfg, d: DistInfo, model: torch.nn.Module, net: torch.nn.Module, optimizer, scaler, peak: float,
        step: int, loader, loss_of: Callable[[Batch, int], torch.Tensor], extra_state: dict,
        after_step: Callable[[int], None] | None = None) -> dict:
    """Trains from `step` to cfg.steps on `loader` (see train_loader). `loss_of(batch, step)` runs
    the forward pass of `net` (the DDP/compiled wrapper of `model`) and returns the loss; `extra_state` goes into every
    checkpoint; `after_step(step)` runs on every rank after each optimizer step (e.g. a picture).
    Returns {"step", "loss", "stopped"}."""
    run_dir = Path(cfg.run_dir)
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(f"{cfg.shards}: fewer samples than one global batch of {cfg.batch_size}")
    metrics = MetricsLog(run_dir, d.is_main, resume_step=step)
    progress = Progress(cfg.steps * cfg.batch_size, step * cfg.batch_size, d.is_main)
    stop = StopFlag()

    def checkpoint():
        if d.is_main:
            save_checkpoint(run_dir / "checkpoints", step, {
                "step": step, "samples": step * cfg.batch_size, "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "rng_cpu": torch.get_rng_state(), "config": to_dict(cfg), **extra_state}, cfg.keep_ckpts)
        if dist.is_initialized():
            dist.barrier()

    net.train()
    last_loss = float("nan")
    while step < cfg.steps and not stop.requested:
        epoch, skip = divmod(step, per_epoch)
        loader.set_epoch(epoch)
        for i, batch in enumerate(loader):
            if i < skip:  # resuming mid-epoch: the same batches, in the same order, are skipped
                continue
            lr = lr_at(step * cfg.batch_size, cfg.steps * cfg.batch_size, peak, cfg.warmup_frac)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss = loss_of(batch, step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                last_loss = all_reduce_mean(loss.detach()).item()
                rate = progress.update(cfg.log_every * cfg.batch_size, step * cfg.batch_size, last_loss, lr)
                metrics.log({"step": step, "samples": step * cfg.batch_size, "epoch": epoch, "loss": last_loss,
                             "lr": lr, "img_per_s": rate})
            if after_step is not None:
                after_step(step)
            if stop.check():
                break
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                checkpoint()
            if step >= cfg.steps:
                break
    if stop.requested:
        checkpoint()
        if d.is_main:
            log.warning("stopped by SIGTERM at step %d: checkpoint written", step)
    progress.close()
    metrics.close()
    return {"step": step, "loss": last_loss, "stopped": stop.requested}
