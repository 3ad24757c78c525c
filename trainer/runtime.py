"""Small run-time helpers of the training entry points: preemption, autocast, input checks."""
from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import torch
import torch.distributed as dist


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


def autocast(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def read_shards(root: str, fmt: str) -> dict:
    """shards.json of a finished shard directory; clear errors for missing or partial ones."""
    p = Path(root)
    if not (p / "shards.json").is_file() or not (p / "_SUCCESS").exists():
        raise ValueError(f"{root}: no finished shards (shards.json and _SUCCESS missing): run `make shards`")
    index = json.loads((p / "shards.json").read_text())
    if fmt == "ffcv" and "ffcv" not in index:
        raise ValueError(f"{root}: no FFCV .beton was written (jobs/shards.py --format wds,ffcv)")
    return index


def read_vocab_names(vocab_dir: str, num_classes: int) -> list[str]:
    import pyarrow.parquet as pq

    rows = sorted(pq.read_table(Path(vocab_dir) / "vocab.parquet", columns=["label", "name"]).to_pylist(),
                  key=lambda r: r["label"])
    if len(rows) != num_classes:
        raise ValueError(f"vocabulary {vocab_dir} has {len(rows)} labels but the shards have {num_classes} classes")
    return [r["name"] for r in rows]
