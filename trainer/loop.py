"""The training loop of every trainer (trainer.pretrain, trainer.mae, transfer.finetune): LR
schedule, steps, gradient scaling and clipping, metrics, progress, checkpoints and preemption.

An entry point prepares its run (trainer/prepare.py) and says, in a Task, how a batch becomes a
loss and what else it checkpoints. Resuming is exact: the checkpoint holds the model, optimizer,
scaler, CPU RNG, the task's state and the loader's (epoch, batch); the loader's order is a
function of (seed, epoch), and it starts the interrupted epoch at that batch without reading or
decoding the ones before (`set_epoch(epoch, start)`).

A loader gives `set_epoch(epoch, start=0)` and `epoch_batches(epoch)` (the same on every rank;
epochs may differ in length when each has its own sample index).
"""
from __future__ import annotations

import json
import logging
import signal
from typing import Callable

import torch
import torch.distributed as dist

from pipeline.atomic import write_text_atomic
from trainer.checkpoint import save_checkpoint
from trainer.config import ShardTrainConfig, TrainConfig, to_dict
from trainer.data import make_loader
from trainer.distributed import DistInfo, all_reduce_mean, cleanup_distributed
from trainer.optim import lr_at
from trainer.prepare import Run
from trainer.run_log import MetricsLog, Progress, plot_curves

log = logging.getLogger("trainer")


class Task:
    """What an entry point adds to the loop. `loss(batch, step)` runs the forward pass (of
    run.net) and returns the loss; `after_step(step)` runs on every rank after each optimizer
    step (an EMA update, a picture); `state_dict()` goes into every checkpoint (rank 0's) and
    comes back through `load_state_dict` when a run resumes."""

    def loss(self, batch, step: int) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StopFlag:
    """Set by SIGTERM (preemption); `check()` makes every rank agree at the same step."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self.requested = True

    def check(self) -> bool:
        if dist.is_initialized():
            t = torch.tensor([1.0 if self.requested else 0.0])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            self.requested = bool(t.item())
        return self.requested


def train_loader(cfg: ShardTrainConfig, d: DistInfo, make=make_loader):
    """This rank's loader of the shards: its share of every global batch of cfg.batch_size."""
    return make(cfg.data_format, cfg.shards, batch_size=cfg.batch_size // d.world_size, rank=d.rank,
                world_size=d.world_size, num_workers=cfg.workers, train=True, size=cfg.img_size, seed=cfg.seed,
                samples=cfg.samples)


def fit(cfg: TrainConfig, run: Run, task: Task, loader, steps: int, peak: float) -> dict:
    """Trains from run.step to `steps` on `loader` (set_epoch(e, start), epoch_batches(e),
    the same on every rank), the LR a function of samples seen with peak `peak`.
    Returns {"step", "loss" (the last logged), "stopped" (by SIGTERM)}."""
    d, model, optimizer, scaler, step = run.d, run.model, run.optimizer, run.scaler, run.step
    if loader.epoch_batches(0) == 0:
        raise ValueError(f"the training data holds fewer samples than one global batch of {cfg.batch_size}")
    if run.resumed is not None:
        task.load_state_dict(run.resumed)
        where = locate(step, loader)
        saved = run.resumed_loader
        if saved is not None and (saved["epoch"], saved["batch"]) != where:
            raise ValueError(f"checkpoint of step {step} was taken at epoch {saved['epoch']} batch {saved['batch']}, "
                             f"but this run's data puts step {step} at epoch {where[0]} batch {where[1]}: the shards, "
                             "sample index, batch size or world size changed since")
    metrics = MetricsLog(run.run_dir, d.is_main, resume_step=step)
    progress = Progress(steps * cfg.batch_size, step * cfg.batch_size, d.is_main)
    stop = StopFlag()

    def checkpoint():
        if d.is_main:
            save_checkpoint(run.run_dir / "checkpoints", step, {
                "step": step, "samples": step * cfg.batch_size, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "rng_cpu": torch.get_rng_state(), "config": to_dict(cfg), "extra": task.state_dict(),
                "loader": dict(zip(("epoch", "batch"), locate(step, loader)))},
                cfg.keep_ckpts)
        if dist.is_initialized():
            dist.barrier()

    run.net.train()
    last_loss = float("nan")
    while step < steps and not stop.requested:
        epoch, start = locate(step, loader)
        loader.set_epoch(epoch, start)  # resuming mid-epoch: the loader starts at batch `start`
        if start == 0 and d.is_main and hasattr(loader, "epoch_stats"):  # samples, and those no rank reads
            with open(run.run_dir / "epochs.jsonl", "a") as f:
                f.write(json.dumps({"epoch": epoch, "step": step, **loader.epoch_stats(epoch)}) + "\n")
        for batch in loader:
            lr = lr_at(step * cfg.batch_size, steps * cfg.batch_size, peak, cfg.warmup_frac)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss = task.loss(batch, step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            if step % cfg.log_every == 0 or step == steps:
                last_loss = all_reduce_mean(loss.detach()).item()
                rate = progress.update(cfg.log_every * cfg.batch_size, step * cfg.batch_size, last_loss, lr)
                metrics.log({"step": step, "samples": step * cfg.batch_size, "epoch": epoch, "loss": last_loss,
                             "lr": lr, "img_per_s": rate})
            task.after_step(step)
            if stop.check():
                break
            if step % cfg.ckpt_every == 0 or step == steps:
                checkpoint()
            if step >= steps:
                break
    if stop.requested:
        checkpoint()
        if d.is_main:
            log.warning("stopped by SIGTERM at step %d: checkpoint written", step)
    progress.close()
    metrics.close()
    return {"step": step, "loss": last_loss, "stopped": stop.requested}


def locate(step: int, loader) -> tuple[int, int]:
    """(epoch, batch within it) of global step `step`."""
    epoch = 0
    while True:
        n = loader.epoch_batches(epoch)
        if n <= 0:
            raise ValueError(f"epoch {epoch} of the training data has no batch")
        if step < n:
            return epoch, step
        step -= n
        epoch += 1


def finish(run: Run, result: dict, write_outputs: Callable[[], None]) -> dict:
    """After fit, for a trainer of a run directory: rank 0 of a finished (not preempted) run
    draws curves.png, calls write_outputs() (the export; it may add to `result`) and writes
    result.json last; then the process group ends."""
    if run.d.is_main and not result["stopped"]:
        plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
        write_outputs()
        write_text_atomic(run.run_dir / "result.json", json.dumps(result))
    cleanup_distributed()
    return result
