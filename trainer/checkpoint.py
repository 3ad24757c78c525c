"""Checkpoints: atomic writes, the last K kept, fallback past a corrupt latest one.

Loaded with torch.load(weights_only=True): only tensors and plain containers, never pickled code.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(directory: Path, step: int, state: dict, keep: int) -> Path:
    path = directory / f"ckpt-{step:09d}.pt"
    with atomic_path(path, fsync=True) as tmp:  # a kill mid-write leaves only a hidden temp file
        torch.save(state, tmp)
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_latest(directory: Path) -> dict | None:
    """The newest readable checkpoint; a corrupt or truncated one is skipped with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a trainer checkpoint")
            state["_path"] = str(path)
            return state
        except Exception as e:  # truncated zip, bad pickle opcode, wrong content: fall back
            log.warning("checkpoint %s is unreadable (%s); falling back to the previous one", path, e)
    return None
