"""What the frozen-trunk protocols (linear probe, few-shot, zero-shot) share: the config keys,
the train/val features, and the JSON + Markdown result next to each other."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.atomic import write_text_atomic
from pipeline.cli import key, to_dict
from transfer.downstream import load_split
from trainer.export import LoadedModel, load_model
from transfer.features import cached_features

log = logging.getLogger("transfer")


def check_out(out: str) -> None:
    """A protocol's `out` is the result JSON; the Markdown summary goes next to it (write_result)."""
    if not str(out).endswith(".json"):
        raise ValueError(f"out must be a .json path, got {out!r}")


@dataclass(frozen=True)
class ProtocolConfig:
    model: str = key(help="export directory, or random:<timm name>")
    data: str = key(help="downstream dataset (transfer/downstream.py)")
    out: str = key(help="result JSON; a Markdown summary is written next to it (.md)")
    img_size: int = key(224, "input side in pixels")
    batch_size: int = key(64, "feature extraction batch")
    workers: int = key(0, "data loader worker processes")
    seed: int = key(0, "random init's seed (and the protocol's own draws)")
    device: str = key("auto", "auto | cuda | cpu")
    cache_dir: str | None = key(None, "feature cache; null: <out's directory>/features")

    def __post_init__(self):
        if self.img_size < 8:
            raise ValueError(f"img_size must be >= 8, got {self.img_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_out(self.out)


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
        write_text_atomic(path, text)
    log.info("wrote %s and %s", out, out.with_suffix(".md"))
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"
