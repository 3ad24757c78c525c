"""Hashtag pretraining of a timm model on the shards (SWAG section 3.2; MAWS appendix).

    torchrun --nproc_per_node=8 -m trainer.pretrain --config trainer/configs/regnety_16gf.yaml \
        shards=/data/shards run_dir=runs/r16 [key=value ...]
    python -m trainer.pretrain --config trainer/configs/demo_cpu.yaml   # one CPU process

Training length is a number of samples; the LR is a pure function of samples seen. A run
directory holds config.yaml, metrics.jsonl, tb/, checkpoints/, curves.png and the export.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from trainer.checkpoint import unwrap
from trainer.config import load_config, to_dict
from trainer.data import make_loader, model_data_config
from trainer.distributed import DistInfo, cleanup_distributed, setup_distributed
from trainer.export import export_model
from trainer.loop import fit, resume, train_loader
from trainer.losses import LOSSES, get_loss
from trainer.run_log import plot_curves
from trainer.models import HEADS, create_model
from trainer.optim import RECIPES, build_optimizer, peak_lr
from trainer.runtime import autocast, read_shards, read_vocab_names

log = logging.getLogger("pretrain")
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-5, "adamw": 0.1, "mae": 0.05}


@dataclass(frozen=True)
class PretrainConfig:
    shards: str
    run_dir: str
    total_samples: int
    model: str = "regnety_002"
    head: str = "linear"
    img_size: int = 224
    data_format: str = "wds"
    vocab: str | None = None          # vocab dir: label names go into the export; C must match
    loss: str = "softmax"
    optimizer: str = "sgd"
    base_lr: float | None = None      # at the recipe's reference batch (sgd 0.1/256, adamw 4e-4/8192, mae 1.5e-4/256)
    weight_decay: float | None = None
    batch_size: int = 256             # global
    warmup_frac: float = 0.05
    grad_clip: float | None = None
    precision: str = "auto"           # auto: bf16 autocast on GPU, fp32 on CPU
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    workers: int = 2
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 100             # steps
    keep_ckpts: int = 3
    init_from: str | None = None      # an MAE encoder export (MAWS)
    device: str = "auto"

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.optimizer not in RECIPES:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(RECIPES)}")
        if self.base_lr is not None and self.base_lr <= 0:
            raise ValueError(f"base_lr must be > 0, got {self.base_lr}")
        if self.batch_size <= 0 or self.total_samples < self.batch_size:
            raise ValueError(f"need 0 < batch_size <= total_samples, got {self.batch_size}, {self.total_samples}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError("warmup_frac must be in [0, 1)")

    @property
    def steps(self) -> int:
        return self.total_samples // self.batch_size


def setup(cfg: PretrainConfig, d: DistInfo):
    """Everything checked before any work: data, vocabulary, model, batch divisibility."""
    import timm

    if not timm.is_model(cfg.model):
        raise ValueError(f"unknown timm model {cfg.model!r}")
    if cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {d.world_size}")
    index = read_shards(cfg.shards, cfg.data_format)
    names = read_vocab_names(cfg.vocab, index["num_classes"]) if cfg.vocab else None
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = create_model(cfg.model, index["num_classes"], cfg.head, cfg.img_size)
    if cfg.init_from:
        from trainer.mae.init_from import load_encoder

        load_encoder(model.trunk, cfg.init_from)
    return index, names, model


def train(cfg: PretrainConfig) -> dict:
    d = setup_distributed(cfg.device)
    index, names, model = setup(cfg, d)
    run_dir = Path(cfg.run_dir)
    data_cfg = model_data_config(cfg.model)
    mean = torch.tensor(data_cfg.mean, device=d.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(data_cfg.std, device=d.device).view(1, 3, 1, 1) * 255
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(d.device, memory_format=fmt)
    if cfg.sync_bn and d.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    peak = peak_lr(cfg.optimizer, cfg.batch_size, cfg.base_lr)
    wd = cfg.weight_decay if cfg.weight_decay is not None else DEFAULT_WEIGHT_DECAY[cfg.optimizer]
    optimizer = build_optimizer(cfg.optimizer, model, peak, wd)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if d.device.type == "cuda" else "fp32")
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")
    step = resume(run_dir, model, optimizer, scaler, d)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if d.world_size > 1 else model
    net = torch.compile(ddp) if cfg.compile else ddp
    loss_fn = get_loss(cfg.loss)
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    def loss_of(batch, step):
        x = batch.images.to(d.device, non_blocking=True).float().sub_(mean).div_(std)
        x = x.contiguous(memory_format=fmt)
        with autocast(d.device, precision):
            return loss_fn(net(x), batch.targets.to(d.device, non_blocking=True))

    loader = train_loader(cfg, d, make_loader)  # looked up here: bench/trainer_bench.py swaps it
    result = fit(cfg, d, model, net, optimizer, scaler, peak, step, loader, loss_of,
                 {"num_classes": index["num_classes"], "labels": names or []})
    stopped = result["stopped"]
    if d.is_main and not stopped:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        export_model(unwrap(model), run_dir / "export", {
            "model": cfg.model, "head": cfg.head, "num_classes": index["num_classes"], "labels": names or [],
            "img_size": cfg.img_size, "input_size": [3, cfg.img_size, cfg.img_size], "mean": list(data_cfg.mean),
            "std": list(data_cfg.std), "config": to_dict(cfg)})
        (run_dir / "result.json").write_text(json.dumps(result))
    cleanup_distributed()
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(PretrainConfig, sys.argv[1:] if argv is None else argv)
    return train(cfg)


if __name__ == "__main__":
    main()
