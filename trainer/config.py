"""Config of the trainer's and transfer's entry points: YAML file + `key=value` overrides.

Each entry point has one frozen dataclass; its resolved dict is saved next to the outputs and
inside every checkpoint. A field's one line of `--help` is its metadata (`key(default, help)`),
as jobs/lib/config.py reads it for the Spark jobs' flags. `TrainConfig` holds the keys every
trainer has (pretrain, MAE, finetune) and checks them once; `ShardTrainConfig` adds what the two
trainers that read the shards share.

A bad command line (unknown or missing key, a value of the wrong type) is a usage message naming
the key and exit status 2; `--help` lists every key with its type, default and help, exit 0.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

C = TypeVar("C")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda", "cpu")


def key(default=dataclasses.MISSING, help: str = ""):
    """A config field with its line of `--help`; without a default the key is required."""
    return dataclasses.field(default=default, metadata={"help": help})


class ConfigError(ValueError):
    """The keys or values given do not fit the config class (a usage error on the command line)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The keys of every training entry point; see trainer/prepare.py and trainer/loop.py."""
    img_size: int = key(224, "input side in pixels")
    batch_size: int = key(256, "global batch, split evenly over the processes")
    base_lr: float | None = key(None, "lr at the recipe's reference batch, scaled linearly; null: the recipe's")
    warmup_frac: float = key(0.05, "share of training with a linear lr warm-up (from lr/10)")
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
        if self.max_bad_samples < 0:
            raise ValueError(f"max_bad_samples must be >= 0, got {self.max_bad_samples}")
        if self.total_samples < self.batch_size:
            raise ValueError(f"need 0 < batch_size <= total_samples, got {self.batch_size}, {self.total_samples}")

    @property
    def steps(self) -> int:
        return self.total_samples // self.batch_size


def load_config(cls: type[C], argv: list[str] | None = None, prog: str | None = None, doc: str | None = None) -> C:
    """`--config FILE` (optional) then `key=value` overrides (values parsed as YAML scalars).

    argv None: sys.argv[1:]. `-h`/`--help` prints `doc` and the keys, then exits 0; a usage error
    (ConfigError) prints the usage and the error to stderr and exits 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or cls.__module__
    if "-h" in argv or "--help" in argv:
        print(help_text(cls, prog, doc))
        raise SystemExit(0)
    try:
        return from_dict(cls, parse_args(argv))
    except ConfigError as e:
        print(f"{usage(prog)}\n{prog}: error: {e}\n(--help lists the keys)", file=sys.stderr)
        raise SystemExit(2) from None


def parse_args(argv: list[str]) -> dict:
    values: dict = {}
    rest = list(argv)
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            raise ConfigError("--config needs a YAML file")
        path = Path(rest[i + 1])
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: expected a mapping of keys to values")
        values.update(loaded)
        del rest[i:i + 2]
    for item in rest:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        values[k.strip()] = yaml.safe_load(v)
    return values


def from_dict(cls: type[C], values: dict) -> C:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; valid: {sorted(fields)}")
    missing = [n for n in fields if n not in values and _required(fields[n])]
    if missing:
        raise ConfigError(f"missing required keys: {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, hints[k], v) for k, v in values.items()})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _coerce(key: str, t, v):
    """v as the field's declared scalar type: YAML reads `1e-3` as a string and `2` as an int
    where a float is declared; anything that is not the declared type is a clear error."""
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        t = next(a for a in args if a is not type(None))
    if typing.get_origin(t) is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list such as [1, 2], got {v!r}")
        return tuple(v)
    if t is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r}: expected a number, got {v!r}")
    if t is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"config key {key!r}: expected an integer, got {v!r}")
    if t is bool and not isinstance(v, bool):
        raise ConfigError(f"config key {key!r}: expected true or false, got {v!r}")
    if t is str:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)  # run_dir=2024 is a name, not a number
        if not isinstance(v, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {v!r}")
    return v


def to_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def usage(prog: str) -> str:
    return f"usage: python -m {prog} [--config FILE.yaml] [key=value ...]"


def _type_name(t) -> str:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(t))
    if typing.get_origin(t) is tuple:
        return f"list of {_type_name(typing.get_args(t)[0])}"
    return "null" if t is type(None) else getattr(t, "__name__", str(t))


def _shown(value) -> str:
    return yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True, width=10**6).strip() \
        .removesuffix("...").strip()


def help_text(cls, prog: str, doc: str | None = None) -> str:
    """The entry point's docstring and one line per key: name, type, default (or required), help;
    required keys first, then the entry point's own, then those it inherits."""
    hints = typing.get_type_hints(cls)
    own_first = [n for c in cls.__mro__ for n in c.__dict__.get("__annotations__", {})]
    fields = sorted(dataclasses.fields(cls), key=lambda f: (not _required(f), own_first.index(f.name)))
    rows = [(f.name, _type_name(hints[f.name]), "required" if _required(f) else _shown(f.default),
             f.metadata.get("help", "")) for f in fields]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [usage(prog), ""]
    if doc:
        lines += [doc.strip(), ""]
    lines.append("keys (key=value on the command line, values in YAML; --config FILE.yaml sets several):")
    lines += [f"  {n:<{widths[0]}}  {t:<{widths[1]}}  {d:<{widths[2]}}  {h}".rstrip() for n, t, d, h in rows]
    return "\n".join(lines)
