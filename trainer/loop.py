"""The training loop of every trainer (trainer.pretrain, trainer.mae, transfer.finetune): LR
schedule, steps, gradient scaling and clipping, metrics, progress, checkpoints and preemption.

An entry point prepares its run (trainer/prepare.py) and says, in a Task, how a batch becomes a
loss and what else it checkpoints. Resuming is exact: the checkpoint (trainer.checkpoint.Checkpoint)
holds the model, optimizer, scaler, CPU RNG, the task's state and the loader's (epoch, batch); the
loader's order is a function of (seed, epoch), and it starts the interrupted epoch at that batch
without reading or decoding the ones before (`set_epoch(epoch, start)`).

The loader is a trainer.data.protocol.TrainLoader: `set_epoch(epoch, start=0)`,
`epoch_batches(epoch)` (the same on every rank; epochs may differ in length when each has its own
sample index), `epoch_stats(epoch)` (epochs.jsonl), and `order_depends_on`, which of
("world_size", "workers") its global batches depend on: a checkpoint records them, and resuming
with other values of those is refused unless allow_new_data_order (the global batch must always
be the same). Batches name the samples dropped as undecodable (`skipped`): the run counts them
over all ranks and stops beyond cfg.max_bad_samples.

With several processes, a collective that times out (cfg.collective_timeout_s: another rank
stalled or died) or loses a peer is re-raised naming this rank and the step.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from pipeline.atomic import write_text_atomic
from trainer.checkpoint import BadSampleTally, Checkpoint, Layout, LoaderPosition, save_checkpoint
from trainer.config import ShardTrainConfig, TrainConfig, to_dict
from trainer.data import make_loader
from trainer.data.protocol import TrainLoader
from trainer.distributed import DistInfo, all_reduce_mean
from trainer.optim import lr_at
from trainer.prepare import Run
from trainer.run_log import MetricsLog, Progress, plot_curves

log = logging.getLogger("trainer")


class Task:
    """What an entry point adds to the loop. `loss(batch, step)` runs the forward pass (of
    run.net) and returns the loss; `after_backward(step)` runs on every rank between the
    backward pass and the optimizer step (SwAV drops its frozen prototypes' gradient there);
    `after_step(step)` runs on every rank after each optimizer step (an EMA update, a picture);
    `log_metrics(step, loss)` adds the task's own figures to each metrics.jsonl record (called on
    every rank at the same steps: it may all-reduce). `state_dict()` is called on every rank at
    each checkpoint (it may gather; rank 0's result is saved) and comes back through
    `load_state_dict` on every rank when a run resumes."""

    def loss(self, batch, step: int) -> torch.Tensor:
        raise NotImplementedError

    def after_backward(self, step: int) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass

    def log_metrics(self, step: int, loss: float) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StopFlag:
    """Set by SIGTERM (preemption); `check(bad)` makes every rank agree at the same step, and sums
    this step's bad samples over the ranks in the same all-reduce."""

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.requested, self.device = False, device  # NCCL reduces only tensors on the GPU
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self.requested = True

    def check(self, bad: int = 0) -> int:
        """This step's bad samples over all ranks; self.requested is then every rank's verdict."""
        if not dist.is_initialized():
            return bad
        t = torch.tensor([1.0 if self.requested else 0.0, float(bad)], device=self.device)
        dist.all_reduce(t)
        requested, total = t.tolist()
        self.requested = requested > 0
        return int(total)


class CollectiveFailed(RuntimeError):
    """A collective of the training loop timed out or lost a peer; the message names this rank."""


class TooManyBadSamples(ValueError):
    """More training samples failed to decode than cfg.max_bad_samples allows."""


class BadSamples:
    """The run's undecodable samples ('shard:key: reason', every rank's), restored on resume."""

    def __init__(self, limit: int, saved: BadSampleTally):
        self.limit = limit
        self.names: list[str] = list(saved.names)
        self.count = saved.count

    def add(self, mine: tuple[str, ...], total: int, d: DistInfo, step: int) -> None:
        """Called on every rank with this rank's skipped samples of the step and the ranks' total."""
        if total == 0:
            return
        if dist.is_initialized():  # rare: every rank has a total > 0 at the same step
            gathered = [None] * d.world_size
            dist.all_gather_object(gathered, list(mine))
            names = [n for part in gathered for n in part]
        else:
            names = list(mine)
        self.count += total
        self.names += names
        if d.is_main:
            for n in names:
                log.warning("step %d: skipped a bad sample (%d of at most %d): %s", step, self.count, self.limit, n)
        if self.count > self.limit:
            shown = self.names[-20:]
            raise TooManyBadSamples(
                f"{self.count} training samples failed to decode by step {step}, more than max_bad_samples="
                f"{self.limit}; {'the last 20: ' if len(self.names) > 20 else ''}{'; '.join(shown)}. Repair or "
                "rewrite those shards (jobs/shards.py), or raise max_bad_samples and rerun: the run resumes from "
                "its last checkpoint")

    def tally(self) -> BadSampleTally:
        return BadSampleTally(self.count, tuple(self.names))


def check_resume(cfg: TrainConfig, d: DistInfo, resumed: Checkpoint, loader: TrainLoader) -> None:
    """Refuse a resume the data cannot continue: see check_resume_layout; with the checkpoint's
    layout, this run's data must put its step where the checkpoint's loader position says."""
    saved, where = resumed.loader, locate(resumed.step, loader)
    if check_resume_layout(cfg, d, resumed, loader) and saved is not None and (saved.epoch, saved.batch) != where:
        raise ValueError(f"checkpoint of step {resumed.step} was taken at epoch {saved.epoch} batch {saved.batch}, "
                         f"but this run's data puts step {resumed.step} at epoch {where[0]} batch {where[1]}: the "
                         "shards, sample index, batch size or world size changed since")


def check_resume_layout(cfg: TrainConfig, d: DistInfo, resumed: Checkpoint, loader: TrainLoader) -> bool:
    """Refuse a resume the data order cannot continue: another global batch always, another world
    size or loader workers where the loader's order depends on them unless allow_new_data_order.
    True when the layout is the checkpoint's (the saved loader position must then match)."""
    if resumed.layout is None:  # a checkpoint written before layouts were recorded
        return True
    path, saved = resumed.path, resumed.layout
    now = Layout.of(cfg.batch_size, d.world_size, cfg.workers)
    if saved.batch_size != now.batch_size:
        raise ValueError(f"{path} was written with global batch_size {saved.batch_size}, this run has "
                         f"{now.batch_size}: a run resumes only with its global batch (steps and the lr "
                         "schedule count in it)")
    changed = [k for k in loader.order_depends_on if dataclasses.asdict(saved)[k] != dataclasses.asdict(now)[k]]
    if not changed:
        if saved.world_size != now.world_size and d.is_main:
            log.warning("resuming %s (world size %d, %d per rank) on world size %d (%d per rank): this loader's "
                        "global batches do not depend on the world size", path, saved.world_size,
                        saved.rank_batch, now.world_size, now.rank_batch)
        return True
    what = (f"{path} was written on world size {saved.world_size} with batch {saved.rank_batch} per rank and "
            f"{saved.workers} loader workers, this run has world size {now.world_size} with batch "
            f"{now.rank_batch} per rank and {now.workers} workers (global batch {now.batch_size} both)")
    if not cfg.allow_new_data_order:
        raise ValueError(f"{what}: this loader plans its data order per rank x worker, so the resumed run could not "
                         "continue the interrupted one's. Resume with the same world size and workers, or set "
                         "allow_new_data_order=true to go on in another order")
    if d.is_main:
        log.warning("%s: allow_new_data_order, so the data order from here on is not the uninterrupted run's", what)
    return False


def write_epoch_record(run_dir: Path, record: dict) -> None:
    """epochs.jsonl gets one line per epoch: a resumed run rewrites it without the lines of this
    epoch and later ones (a run killed after starting epoch e wrote e's line already)."""
    path = run_dir / "epochs.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    keep = []
    for ln in lines:
        try:
            if json.loads(ln)["epoch"] < record["epoch"]:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill
            pass
    write_text_atomic(path, "".join(k + "\n" for k in keep + [json.dumps(record)]))


def collective_failure(e: BaseException) -> bool:
    """A failed or timed-out collective (gloo: DistBackendError, or a RuntimeError naming the
    transport or the timeout: a stalled peer surfaces as "Timed out waiting ..." or, when DDP's
    buffer broadcast meets it first, "Application timeout caused pair closure"), as opposed to an
    error of the model's own code."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return any(w in text for w in ("gloo", "timed out", "timeout", "connection closed", "connection reset", "nccl"))


def train_loader(cfg: ShardTrainConfig, d: DistInfo, make=make_loader, transform=None):
    """This rank's loader of the shards: its share of every global batch of cfg.batch_size; images
    that do not decode are dropped and named in the batch (fit counts them). transform: the
    trainer's own views of an image (SwAV's multi-crop) in place of the reader's crop."""
    extra = {"transform": transform} if transform is not None else {}
    return make(cfg.data_format, cfg.shards, batch_size=cfg.batch_size // d.world_size, rank=d.rank,
                world_size=d.world_size, num_workers=cfg.workers, train=True, size=cfg.img_size, seed=cfg.seed,
                sample_index=cfg.sample_index, skip_bad_images=True, **extra)


def fit(cfg: TrainConfig, run: Run, task: Task, loader: TrainLoader, steps: int, peak: float) -> dict:
    """Trains from run.step to `steps` on `loader`, the LR a function of samples seen with peak
    `peak`. Returns {"step", "loss" (the last logged), "stopped" (by SIGTERM), "bad_samples"
    (count), "bad_sample_names"}."""
    d, model, optimizer, scaler, step = run.d, run.model, run.optimizer, run.scaler, run.step
    if loader.epoch_batches(0) == 0:
        raise ValueError(f"the training data holds fewer samples than one global batch of {cfg.batch_size}")
    if run.resumed is not None:
        task.load_state_dict(run.resumed.task_state)
        check_resume(cfg, d, run.resumed, loader)
    metrics = MetricsLog(run.run_dir, d.is_main, resume_step=step)
    progress = Progress(steps * cfg.batch_size, step * cfg.batch_size, d.is_main)
    stop = StopFlag(d.device)
    bad = BadSamples(cfg.max_bad_samples, run.resumed.bad_samples if run.resumed else BadSampleTally())

    def checkpoint():
        task_state = task.state_dict()  # on every rank: a task may gather its ranks' state
        if d.is_main:
            save_checkpoint(run.run_dir / "checkpoints", Checkpoint(
                step=step, samples=step * cfg.batch_size, model=model.state_dict(), optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict(), rng_cpu=torch.get_rng_state(), config=to_dict(cfg), task_state=task_state,
                loader=LoaderPosition(*locate(step, loader)), bad_samples=bad.tally(),
                layout=Layout.of(cfg.batch_size, d.world_size, cfg.workers)), cfg.keep_ckpts)
        if dist.is_initialized():
            dist.barrier()

    run.net.train()
    last_loss = float("nan")
    try:
        while step < steps and not stop.requested:
            epoch, start = locate(step, loader)
            loader.set_epoch(epoch, start)  # resuming mid-epoch: the loader starts at batch `start`
            if start == 0 and d.is_main:  # samples, and those no rank reads
                write_epoch_record(run.run_dir, {"epoch": epoch, "step": step, **loader.epoch_stats(epoch)})
            for batch in loader:
                lr = lr_at(step * cfg.batch_size, steps * cfg.batch_size, peak, cfg.warmup_frac)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss = task.loss(batch, step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                task.after_backward(step)
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                skipped = tuple(batch.skipped)
                bad.add(skipped, stop.check(len(skipped)), d, step)  # one all-reduce: stop request, bad samples
                if step % cfg.log_every == 0 or step == steps:
                    last_loss = all_reduce_mean(loss.detach()).item()
                    rate = progress.update(cfg.log_every * cfg.batch_size, step * cfg.batch_size, last_loss, lr)
                    metrics.log({"step": step, "samples": step * cfg.batch_size, "epoch": epoch, "loss": last_loss,
                                 "lr": lr, "img_per_s": rate, "bad_samples": bad.count,
                                 **task.log_metrics(step, last_loss)})
                task.after_step(step)
                if stop.requested:
                    break
                if step % cfg.ckpt_every == 0 or step == steps:
                    checkpoint()
                if step >= steps:
                    break
        if stop.requested:
            checkpoint()
            if d.is_main:
                log.warning("stopped by SIGTERM at step %d: checkpoint written", step)
    except RuntimeError as e:
        if d.world_size > 1 and collective_failure(e):
            raise CollectiveFailed(
                f"rank {d.rank} of {d.world_size}: a collective failed after step {step} (collective_timeout_s="
                f"{cfg.collective_timeout_s:g}): another rank stalled (in its data loader, on a hung file system) "
                f"or died; see the other ranks' logs. {type(e).__name__}: {e}") from e
        raise
    progress.close()
    metrics.close()
    return {"step": step, "loss": last_loss, "stopped": stop.requested, "bad_samples": bad.count,
            "bad_sample_names": bad.names}


def locate(step: int, loader: TrainLoader) -> tuple[int, int]:
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
    run.close()
    return result
