"""What every trainer does before its first step, written once: processes, precision and scaler,
the model on its device (channels-last, SyncBatchNorm, DDP, torch.compile), the optimizer, the
resume from the newest checkpoint, and config.yaml in the run directory.

    d = start(cfg)                                   # torchrun's processes; batch divisibility
    run = prepare(cfg, d, model, lambda m: SGD(m.parameters(), lr=peak), run_dir, mean, std)
    x = run.inputs(batch.images)                     # uint8 -> normalized float on the device
    with run.autocast():
        loss = loss_fn(run.net(x), targets)
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import yaml
from torch import nn

from pipeline.atomic import write_text_atomic
from trainer.checkpoint import Checkpoint, list_checkpoints, load_latest, set_aside
from trainer.config import TrainConfig, to_dict
from trainer.data.transforms import pixel_stats
from trainer.distributed import DistInfo, cleanup_distributed, setup_distributed

log = logging.getLogger("trainer")


def start(cfg: TrainConfig) -> DistInfo:
    """This process's place among torchrun's (one CPU process without torchrun); the global batch
    must split evenly over the processes."""
    d = setup_distributed(cfg.device, cfg.collective_timeout_s)
    if cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {d.world_size}")
    return d


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on GPU and fp32 on CPU; the others stand as they are."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def use_sync_bn(asked: bool, d: DistInfo) -> bool:
    """SyncBatchNorm when asked, with several processes, on GPUs (PyTorch has no CPU kernel)."""
    if not asked or d.world_size == 1:
        return False
    if d.device.type != "cuda":
        if d.is_main:
            log.warning("SyncBatchNorm needs GPUs: each of the %d CPU processes normalises its own batch",
                        d.world_size)
        return False
    return True


@dataclass(kw_only=True)
class Run:
    """A prepared training run; `model` is the plain module (checkpoints, EMA, export), `net` what
    the forward pass calls (its DDP and/or compiled wrapper)."""
    d: DistInfo
    run_dir: Path
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: str                 # resolved: bf16 | fp16 | fp32
    sync_bn: bool                  # SyncBatchNorm in use
    memory_format: torch.memory_format
    mean: torch.Tensor             # [1, 3, 1, 1] on the device, in uint8 units
    std: torch.Tensor
    resumed: Checkpoint | None     # the checkpoint resumed (its weights loaded, then dropped); None: from step 0

    @property
    def step(self) -> int:
        """The first step to run: 0, or the resumed checkpoint's step."""
        return self.resumed.step if self.resumed else 0

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.d.device, non_blocking=True).float().sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format)

    def autocast(self):
        return autocast(self.d.device, self.precision)

    def close(self) -> None:
        """Ends the run's processes: drops the DDP/compiled wrapper (self.net becomes the plain
        model), then cleanup_distributed (collect, barrier, destroy)."""
        self.net = self.model
        cleanup_distributed()


def prepare(cfg: TrainConfig, d: DistInfo, model: nn.Module,
            make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], run_dir: Path,
            mean: Sequence[float], std: Sequence[float], find_unused_parameters: bool = False) -> Run:
    """Moves and wraps `model` as cfg says, builds its optimizer (on the moved model), loads the
    newest readable checkpoint of run_dir/checkpoints (model, optimizer, scaler, CPU RNG; when
    there are some and none loads, UnreadableCheckpoints unless cfg.fresh_start; the rest of it is
    run.resumed, for fit) and writes run_dir/config.yaml on rank 0. `mean`/`std` are the model's,
    in [0, 1] units."""
    precision = resolve_precision(cfg.precision, d.device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(d.device, memory_format=fmt)
    sync_bn = use_sync_bn(cfg.sync_bn, d)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(model)
    # the scaler's device is ours: a "cuda" scaler disables itself on a CPU-only machine
    scaler = torch.amp.GradScaler(d.device.type, enabled=precision == "fp16")
    resumed = load_latest(run_dir / "checkpoints", cfg.fresh_start)
    if resumed is None and cfg.fresh_start and d.is_main and list_checkpoints(run_dir / "checkpoints"):
        moved = set_aside(run_dir / "checkpoints")
        log.warning("fresh_start: moved %d unreadable checkpoint(s) to %s", len(moved), moved[0].parent if moved else "")
    if resumed is not None:
        model.load_state_dict(resumed.model)
        optimizer.load_state_dict(resumed.optimizer)
        scaler.load_state_dict(resumed.scaler)
        torch.set_rng_state(resumed.rng_cpu)
        if d.is_main:
            log.warning("resumed from %s at step %d", resumed.path, resumed.step)
        resumed = resumed.without_weights()
    net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters) \
        if d.world_size > 1 else model
    net = torch.compile(net) if cfg.compile else net
    if d.is_main:
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return Run(d=d, run_dir=run_dir, model=model, net=net, optimizer=optimizer, scaler=scaler, precision=precision,
               sync_bn=sync_bn, memory_format=fmt, mean=pixel_stats(mean, d.device), std=pixel_stats(std, d.device),
               resumed=resumed)
