"""Config of the trainer's and transfer's entry points: the keys every trainer shares.

Each entry point has one frozen dataclass; its resolved dict is saved next to the outputs and
inside every checkpoint. The loader (YAML file + `key=value` overrides, `--help`, usage errors,
`key(default, help)` fields) is pipeline/cli.py's, re-exported here. `TrainConfig` holds the keys
every trainer has (pretrain, MAE, finetune) and checks them once; `ShardTrainConfig` adds what the
two trainers that read the shards share.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.cli import ConfigError, from_dict, key, load_config, to_dict  # noqa: F401 (re-exported)
from trainer.recipes import PRETRAIN_WARMUP

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The keys of every training entry point; see trainer/prepare.py and trainer/loop.py."""
    img_size: int = key(224, "input side in pixels")
    batch_size: int = key(256, "global batch, split evenly over the processes")
    base_lr: float | None = key(None, "lr at the recipe's reference batch, scaled linearly; null: the recipe's")
    warmup_frac: float = key(PRETRAIN_WARMUP, "share of training with a linear lr warm-up (from lr/10)")
    grad_clip: float | None = key(None, "clip the gradient norm to this; null: no clipping")
    precision: str = key("auto", "auto | bf16 | fp16 | fp32 (auto: bf16 autocast on GPU, fp32 on CPU; fp16 "
                                 "uses a GradScaler)")
    channels_last: bool = key(False, "channels-last memory format for model and inputs")
    compile: bool = key(False, "torch.compile the model")
    sync_bn: bool = key(False, "SyncBatchNorm across GPU processes (PyTorch has no CPU kernel for it)")
    workers: int = key(2, "data loader worker processes per training process")
    seed: int = key(0, "seed of the initial weights and of every random draw")
    log_every: int = key(10, "steps between metrics.jsonl records")
    ckpt_every: int = key(100, "steps between checkpoints")
    keep_ckpts: int = key(3, "newest checkpoints kept (0: all)")
    device: str = key("auto", "auto | cuda | cpu")
    fresh_start: bool = key(False, "start from step 0 when every checkpoint of the run directory is unreadable "
                                   "(they are moved to checkpoints/unreadable/); a readable one is always resumed")
    collective_timeout_s: float = key(1800.0, "seconds a collective (gradient all-reduce, barrier) waits for the "
                                              "other processes; then this one fails naming its rank and step. "
                                              "Must exceed the longest checkpoint write and the export")
    allow_new_data_order: bool = key(False, "resume a checkpoint taken with another world size or loader workers "
                                            "where the data order depends on them (WebDataset); the run then "
                                            "differs from an uninterrupted one")
    max_bad_samples: int = key(0, "training samples the reader may drop as undecodable (each logged and counted); "
                                  "one more stops the run naming them")

    def __post_init__(self):
        if self.img_size < 8:
            raise ValueError(f"img_size must be >= 8, got {self.img_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.base_lr is not None and self.base_lr <= 0:
            raise ValueError(f"base_lr must be > 0, got {self.base_lr}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 (or null), got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be {', '.join(DEVICES)}; got {self.device!r}")
        if self.collective_timeout_s <= 0:
            raise ValueError(f"collective_timeout_s must be > 0, got {self.collective_timeout_s}")
        if self.max_bad_samples < 0:
            raise ValueError(f"max_bad_samples must be >= 0, got {self.max_bad_samples}")
        if self.workers < 0 or self.log_every < 1 or self.ckpt_every < 1 or self.keep_ckpts < 0:
            raise ValueError(f"need workers >= 0, log_every >= 1, ckpt_every >= 1, keep_ckpts >= 0; got "
                             f"{self.workers}, {self.log_every}, {self.ckpt_every}, {self.keep_ckpts}")


@dataclass(frozen=True, kw_only=True)
class ShardTrainConfig(TrainConfig):
    """A trainer that reads the shards of jobs/shards.py into a run directory of its own."""
    shards: str = key(help="finished shard directory (jobs/shards.py)")
    run_dir: str = key(help="run directory: config.yaml, metrics.jsonl, tb/, checkpoints/, export/")
    total_samples: int = key(help="training length in samples (steps = total_samples // batch_size)")
    data_format: str = key("wds", "shard format: wds | ffcv")
    sample_index: str | None = key(None, "sample index bound to the shards (jobs/resample.py --shards: its OUT); "
                                         "default: every stored image once per epoch")
    max_bad_samples: int = key(10, "training images that fail to decode (WebDataset), each dropped from its batch, "
                                   "logged and counted (metrics.jsonl bad_samples); one more stops the run naming "
                                   "them. FFCV refuses bad images when the .beton is written")

    def __post_init__(self):
        super().__post_init__()
        if self.total_samples < self.batch_size:
            raise ValueError(f"need 0 < batch_size <= total_samples, got {self.batch_size}, {self.total_samples}")

    @property
    def steps(self) -> int:
        return self.total_samples // self.batch_size
