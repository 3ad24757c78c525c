"""The measured cost of one training step of any trainer, for comparisons at equal compute.

    cost = step_cost("trainer.swav", ["--config", "trainer/configs/swav_regnety_demo_cpu.yaml",
                                      "shards=build/demo/shards"])

The trainer's own `build(cfg, d, run_dir)` prepares its run in a scratch directory (model,
optimizer, task, loader: the same objects `torchrun -m <trainer>` trains), the loader's first
batch is read once (multi-crop views and all), and the task's step (forward, loss, backward,
the task's hooks, optimizer step) is run `warmup + steps` times on it. Data loading is not
timed: it overlaps compute in a real run, in its own worker processes. Figures are the fastest
repeat (as timeit: slower ones measure other processes' load), in CPU seconds of this process
(all of torch's threads) and in wall seconds; FLOPs of one step come from torch's
FlopCounterMode.
"""
from __future__ import annotations

import dataclasses
import importlib
import tempfile
import time
from pathlib import Path

import torch

from trainer.config import load_config

# trainer (torchrun -m name) -> (the module with its build() and config class, the class's name)
TRAINERS = {"trainer.pretrain": ("trainer.pretrain", "PretrainConfig"),
            "trainer.mae": ("trainer.mae.train", "MaeConfig"),
            "trainer.swav": ("trainer.swav.train", "SwavConfig")}


def step_cost(trainer: str, argv: list[str], steps: int = 5, warmup: int = 2) -> dict:
    """{"batch_size", "step_cpu_s", "step_wall_s", "cpu_s_per_image", "flops_per_step", "threads",
    "cpu_times_s"} of one step of `trainer` configured by `argv` (its command line; run_dir and
    total_samples are supplied when missing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.distributed import setup_distributed

    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; valid: {', '.join(TRAINERS)}")
    module, config_class = TRAINERS[trainer]
    mod = importlib.import_module(module)
    with tempfile.TemporaryDirectory(prefix="step-cost-") as tmp:
        given = {a.split("=", 1)[0] for a in argv if "=" in a}
        extra = [f"{k}={v}" for k, v in (("run_dir", f"{tmp}/run"), ("total_samples", 10**9)) if k not in given]
        cfg = dataclasses.replace(load_config(getattr(mod, config_class), [*argv, *extra], trainer),
                                  run_dir=f"{tmp}/run", workers=0)
        d = setup_distributed(cfg.device)
        with torch.random.fork_rng(devices=[]):
            run, task, loader, _ = mod.build(cfg, d, Path(tmp) / "run")
            loader.set_epoch(0)
            batch = next(iter(loader))

            def one(step: int) -> None:
                loss = task.loss(batch, step)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                task.after_backward(step)
                run.optimizer.step()
                task.after_step(step + 1)

            with FlopCounterMode(display=False) as fc:
                one(0)
            cpu, wall = [], []
            for i in range(warmup + steps):
                c, w = time.process_time(), time.perf_counter()
                one(i + 1)
                if i >= warmup:
                    cpu.append(time.process_time() - c)
                    wall.append(time.perf_counter() - w)
    return {"trainer": trainer, "model": cfg.model, "batch_size": cfg.batch_size, "step_cpu_s": min(cpu),
            "step_wall_s": min(wall), "cpu_s_per_image": min(cpu) / cfg.batch_size,
            "flops_per_step": fc.get_total_flops(), "threads": torch.get_num_threads(), "cpu_times_s": cpu}
