"""Per-step time of trainer.pretrain vs a bare timm loop, and the data-wait share with real shards.

    python -m bench.trainer_bench [--model regnety_002] [--img-size 128] [--batch-size 64] [--steps 30] \
        [--shards build/bench/shards-2000] [--formats wds,ffcv] [--workers 1,2]

1. Overhead (target <= 5% on CPU): the same model, batch and synthetic uint8 data through
   (i) a bare loop: timm.create_model, SGD nesterov, normalize, forward, soft-target
   cross-entropy, backward, step; (ii) trainer.pretrain.main with its loader replaced by one
   that hands out the same in-memory batch, so the time from handing out a batch to the next
   request is exactly the trainer's loop body (LR schedule, normalize, loss, scaler, logging)
   with no data wait and no loader workers taking CPU. That loader runs one bare step before
   each batch: the two alternate step by step and share whatever load the machine has.
2. Data wait: trainer.pretrain.main on a real shard set (bench/shards_bench.py writes one; a
   synthetic one from tests/helpers/shardkit is made when it is absent) with its real loader wrapped to
   time each next(): share = time blocked in next() / step time. Results: WORKDIR/trainer-results.json.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from jobs.lib.config import parse_config


@dataclass(frozen=True)
class TrainerBenchConfig:
    model: str = field(default="regnety_002", metadata={"help": "timm model"})
    num_classes: int = field(default=1000, metadata={"help": "classes of the overhead runs"})
    img_size: int = field(default=128, metadata={"help": "input side"})
    batch_size: int = field(default=64, metadata={"help": "batch size"})
    steps: int = field(default=30, metadata={"help": "measured steps per run"})
    warmup: int = field(default=5, metadata={"help": "steps excluded at the start of each run"})
    shards: str = field(default="build/bench/shards-2000", metadata={"help": "real shard set for the data wait"})
    formats: tuple[str, ...] = field(default=("wds", "ffcv"), metadata={"help": "shard formats for the data wait"})
    workers: tuple[str, ...] = field(default=("1", "2"), metadata={"help": "loader workers for the data wait"})
    workdir: str = field(default="build/bench", metadata={"help": "run directories and results"})
    threads: int = field(default=os.cpu_count() or 1, metadata={"help": "torch threads, set before every run"})

    def __post_init__(self):
        if self.steps < 3 or self.batch_size < 1 or self.warmup < 0:
            raise ValueError("--steps >= 3, --batch-size >= 1 and --warmup >= 0 required")
        if not all(w.isdigit() and int(w) > 0 for w in self.workers):
            raise ValueError(f"--workers must be positive integers, got {self.workers}")


def synthetic_batch(cfg: TrainerBenchConfig, num_classes: int, seed: int = 0):
    from trainer.data import Batch, soft_targets

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (cfg.batch_size, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, num_classes, (cfg.batch_size, 1), generator=g)
    return Batch(images, soft_targets(labels, num_classes), torch.arange(cfg.batch_size))


class BareStep:
    """One step of the plainest loop on the same model, batch and optimizer recipe as the trainer."""

    def __init__(self, cfg: TrainerBenchConfig, batch):
        import timm

        from trainer.data import model_data_config
        from trainer.recipes import recipe

        torch.manual_seed(0)
        self.model = timm.create_model(cfg.model, pretrained=False, num_classes=cfg.num_classes).train()
        r = recipe("sgd")  # trainer.pretrain's default, here on every parameter
        self.opt = torch.optim.SGD(self.model.parameters(), lr=r.peak_lr(cfg.batch_size), momentum=r.momentum,
                                   nesterov=r.nesterov, weight_decay=r.weight_decay)
        d = model_data_config(cfg.model)
        self.mean, self.std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in (d.mean, d.std))
        self.batch = batch

    def __call__(self) -> None:
        import torch.nn.functional as F

        x = self.batch.images.float().sub_(self.mean).div_(self.std)
        loss = F.cross_entropy(self.model(x), self.batch.targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class TimedLoader:
    """Wraps a loader (a trainer.data.protocol.TrainLoader, as it is): records, per batch, the time
    blocked in next() and when the batch arrived."""

    def __init__(self, inner):
        self.inner, self.waits, self.stamps = inner, [], []
        self.threads = None  # torch intra-op threads while training (FFCV's Loader sets them)
        self.carry = 0.0  # time blocked in an epoch's final, empty next(): charged to the next batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch, start)

    def epoch_batches(self, epoch: int) -> int:
        return self.inner.epoch_batches(epoch)

    def epoch_stats(self, epoch: int) -> dict:
        return self.inner.epoch_stats(epoch)

    @property
    def order_depends_on(self) -> tuple[str, ...]:
        return self.inner.order_depends_on

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        it = iter(self.inner)
        while True:
            t0 = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                self.carry += time.perf_counter() - t0
                return
            t1 = time.perf_counter()
            self.threads = torch.get_num_threads()
            self.waits.append(t1 - t0 + self.carry)
            self.carry = 0.0
            self.stamps.append(t1)
            yield b


class PairedLoader:
    """Hands the trainer the same in-memory batch, first running one bare step: bare and trainer
    steps alternate one by one, so both see the same machine load. The trainer's step is the time
    from handing out a batch to its next request (no data wait, no loader workers taking CPU)."""
    order_depends_on = ()

    def __init__(self, batch, bare_step: BareStep):
        self.batch, self.bare_step, self.bare, self.trainer = batch, bare_step, [], []

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        pass

    def epoch_batches(self, epoch: int) -> int:
        return len(self)

    def epoch_stats(self, epoch: int) -> dict:
        return {}

    def __len__(self) -> int:
        return 10**9

    def __iter__(self):
        while True:
            t0 = time.perf_counter()
            self.bare_step()
            t1 = time.perf_counter()
            self.bare.append(t1 - t0)
            yield self.batch
            self.trainer.append(time.perf_counter() - t1)  # resumed by the trainer's next request


def run_trainer(cfg: TrainerBenchConfig, shards: Path, run_dir: Path, make, **overrides) -> TimedLoader:
    """trainer.pretrain.main for warmup + steps + 1 steps with its loader built by make(real_make_loader, **kw)."""
    import trainer.pretrain as pretrain

    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover checkpoint would resume
    real, timed = pretrain.make_loader, []
    torch.set_num_threads(cfg.threads)  # importing or building an FFCV Loader changes it process-wide

    def patched(fmt, root, **kw):
        timed.append(TimedLoader(make(real, fmt, root, **kw)))
        return timed[-1]

    argv = {"shards": str(shards), "run_dir": str(run_dir), "model": cfg.model, "img_size": cfg.img_size,
            "batch_size": cfg.batch_size, "total_samples": (cfg.warmup + cfg.steps + 1) * cfg.batch_size,
            "log_every": 10, "ckpt_every": 10**9, "device": "cpu", **overrides}
    pretrain.make_loader = patched
    try:
        pretrain.main([f"{k}={v}" for k, v in argv.items()])
    finally:
        pretrain.make_loader = real
    return timed[0]


def overhead(cfg: TrainerBenchConfig) -> dict:
    from tests.helpers.shardkit import make_shards

    work = Path(cfg.workdir).resolve() / "trainer-bench"
    # only its shards.json (num_classes) is read: the in-memory loader replaces the data
    index_only = make_shards(work / f"index-c{cfg.num_classes}", n=cfg.batch_size, shard_size=cfg.batch_size,
                             num_classes=cfg.num_classes, size=8)
    batch = synthetic_batch(cfg, cfg.num_classes)
    torch.set_num_threads(cfg.threads)
    paired = PairedLoader(batch, BareStep(cfg, batch))
    t = run_trainer(cfg, index_only, work / "run-memory", lambda real, fmt, root, **kw: paired)
    n = min(len(paired.bare), len(paired.trainer))
    bare, trainer = paired.bare[cfg.warmup:n], paired.trainer[cfg.warmup:n]
    print(f"[trainer-bench] bare median {statistics.median(bare) * 1e3:.0f} ms, trainer median "
          f"{statistics.median(trainer) * 1e3:.0f} ms", flush=True)
    return {"bare": bare, "trainer": trainer, "threads": t.threads}


def data_wait(cfg: TrainerBenchConfig) -> dict:
    shards = Path(cfg.shards)
    if not (shards / "_SUCCESS").exists():
        from tests.helpers.shardkit import make_shards

        shards = Path(cfg.workdir).resolve() / "trainer-bench" / "synthetic-shards"
        print(f"[trainer-bench] {cfg.shards} not found (run bench.shards_bench first for real images): "
              f"synthetic flat-colour shards in {shards}", flush=True)
        make_shards(shards, n=2048, shard_size=256, num_classes=22, size=320)
    res = {"shards": str(shards)}
    for fmt in cfg.formats:
        for w in (int(x) for x in cfg.workers):
            t = run_trainer(cfg, shards, Path(cfg.workdir).resolve() / "trainer-bench" / f"run-{fmt}-{w}",
                            lambda real, f, root, **kw: real(f, root, **kw), data_format=fmt, workers=w)
            # step i runs from the request of batch i to the request of batch i + 1
            starts = [s - wt for s, wt in zip(t.stamps, t.waits)]
            steps = [b - a for a, b in zip(starts, starts[1:])][cfg.warmup:]
            waits = t.waits[cfg.warmup:len(starts) - 1]
            res[f"{fmt}/{w}"] = {"format": fmt, "workers": w, "steps": steps, "waits": waits,
                                 "wait_share": sum(waits) / sum(steps), "batches_per_epoch": len(t),
                                 "threads": t.threads}
            print(f"[trainer-bench] {fmt} {w} worker(s): step median {statistics.median(steps) * 1e3:.0f} ms, "
                  f"data wait {100 * sum(waits) / sum(steps):.0f}%", flush=True)
    return res


def print_tables(cfg: TrainerBenchConfig, ov: dict, dw: dict) -> dict:
    print(f"\n(1) per-step time, {cfg.model}, batch {cfg.batch_size}, {cfg.img_size} px, {cfg.num_classes} classes, "
          f"CPU, {ov['threads']} torch threads; {len(ov['bare'])} steps each, bare and trainer steps alternating")
    head = f"{'loop':<34}{'median ms':>11}{'mean ms':>10}{'p90 ms':>9}{'img/s':>9}{'vs bare':>9}"
    print(head + "\n" + "-" * len(head))
    mb = statistics.median(ov["bare"])
    summary = {}
    for name, key in (("bare timm loop", "bare"), ("trainer.pretrain (in-memory batch)", "trainer")):
        t = sorted(ov[key])
        med = statistics.median(t)
        summary[f"{key}_median_ms"] = med * 1e3
        print(f"{name:<34}{med * 1e3:>11.0f}{statistics.fmean(t) * 1e3:>10.0f}{t[int(0.9 * (len(t) - 1))] * 1e3:>9.0f}"
              f"{cfg.batch_size / med:>9.1f}{med / mb:>9.3f}")
    summary["overhead_pct"] = 100 * (statistics.median(ov["trainer"]) / mb - 1)
    summary["overhead_mean_pct"] = 100 * (statistics.fmean(ov["trainer"]) / statistics.fmean(ov["bare"]) - 1)
    summary["overhead_paired_pct"] = 100 * (statistics.median(t / b for t, b in zip(ov["trainer"], ov["bare"])) - 1)
    print(f"trainer overhead: {summary['overhead_pct']:+.1f}% of medians, {summary['overhead_mean_pct']:+.1f}% of "
          f"means, {summary['overhead_paired_pct']:+.1f}% median of step-pair ratios (target <= +5%)")

    print(f"\n(2) data wait with the real shard loader ({dw['shards']}), same model and batch")
    head = (f"{'format':<8}{'workers':>8}{'torch threads':>15}{'step median ms':>16}{'step mean ms':>14}{'img/s':>9}"
            f"{'data wait':>11}")
    print(head + "\n" + "-" * len(head))
    for key, r in dw.items():
        if key == "shards":
            continue
        mean = statistics.fmean(r["steps"])
        print(f"{r['format']:<8}{r['workers']:>8}{r['threads']:>15}{statistics.median(r['steps']) * 1e3:>16.0f}"
              f"{mean * 1e3:>14.0f}{cfg.batch_size / mean:>9.1f}{100 * r['wait_share']:>10.0f}%")
        summary[f"wait_share_{key}"] = r["wait_share"]
    print("data wait: time blocked in next(loader) / step time (the loader's worker start-up each epoch included); "
          "torch threads: intra-op threads the step ran with (FFCV's Loader sets them to its worker count)")
    return summary


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(TrainerBenchConfig, argv, __doc__.splitlines()[0])
    print(f"[trainer-bench] load average {os.getloadavg()}", flush=True)
    ov = overhead(cfg)
    dw = data_wait(cfg)
    summary = print_tables(cfg, ov, dw)
    result = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
              "overhead": ov, "data_wait": dw, "summary": summary}
    path = Path(cfg.workdir) / "trainer-results.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"[trainer-bench] results -> {path}; load average {os.getloadavg()}")
    return result


if __name__ == "__main__":
    main()
