"""What the frozen-trunk protocols (linear probe, few-shot, zero-shot) share: the config keys,
the train/val features, and the JSON + Markdown result next to each other."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.config import to_dict
from transfer.downstream import load_split
from trainer.export import LoadedModel, load_model
from transfer.features import cached_features

log = logging.getLogger("transfer")


@dataclass(frozen=True)
class ProtocolConfig:
    model: str                      # export directory, or random:<timm name>
    data: str                       # downstream dataset (transfer/downstream.py)
    out: str                        # result JSON; a Markdown summary is written next to it (.md)
    img_size: int = 224
    batch_size: int = 64
    workers: int = 0
    seed: int = 0                   # random init's seed (and the protocol's own draws)
    device: str = "auto"
    cache_dir: str | None = None    # feature cache; default: <out's directory>/features

    def __post_init__(self):
        if self.img_size < 8:
            raise ValueError(f"img_size must be >= 8, got {self.img_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not str(self.out).endswith(".json"):
            raise ValueError(f"out must be a .json path, got {self.out!r}")


def device_of(cfg: ProtocolConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def features(cfg: ProtocolConfig) -> tuple[LoadedModel, dict]:
    """The model and {"train"/"val": (features, labels)}, plus the class names."""
    model = load_model(cfg.model, cfg.img_size, cfg.seed)
    cache = cfg.cache_dir or str(Path(cfg.out).parent / "features")
    out = {}
    for split in ("train", "val"):
        s = load_split(cfg.data, split)
        out[split] = cached_features(model, s, cfg.img_size, cache, cfg.batch_size, cfg.workers, device_of(cfg))
        out["classes"] = s.classes
        out[f"{split}_skipped_files"] = s.skipped
    return model, out


def write_result(cfg, result: dict, markdown: str) -> Path:
    """out (JSON, with the config) and out with .md, each written to a temp name then renamed."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {**result, "config": to_dict(cfg)}
    for path, text in ((out, json.dumps(result, indent=2)), (out.with_suffix(".md"), markdown + "\n")):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    log.info("wrote %s and %s", out, out.with_suffix(".md"))
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"
