"""Checkpoints: atomic writes, the last K kept, fallback past a corrupt latest one.

Loaded with torch.load(weights_only=True): only tensors and plain containers, never pickled code.
A run directory whose checkpoints are all unreadable (or refused by weights_only) is an error, not
a silent start from step 0 over the old run; `fresh_start=true` asks for that start explicitly.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
_TEMP = re.compile(r"^\.ckpt-\d{9}\.pt\.(\d+)-[0-9a-f]+\.tmp$")  # pipeline.atomic.temp_sibling's names
UNREADABLE_DIR = "unreadable"


class UnreadableCheckpoints(RuntimeError):
    """Every checkpoint of a run directory failed to load; `failures` is [(path, reason)]."""

    def __init__(self, directory: Path, failures: list[tuple[Path, str]]):
        self.directory, self.failures = directory, failures
        listed = "; ".join(f"{p.name}: {why}" for p, why in failures)
        super().__init__(
            f"{directory}: none of its {len(failures)} checkpoint(s) can be loaded ({listed}). Refusing to start "
            f"from step 0 over the old run: fix or remove them, or set fresh_start=true to start again from step 0 "
            f"(they are then moved to {directory / UNREADABLE_DIR}/)")


def save_checkpoint(directory: Path, step: int, state: dict, keep: int) -> Path:
    """Write ckpt-<step>.pt atomically (a kill mid-write leaves only a hidden temp file, which the
    loader ignores and the next save removes); a failed write (disk full) raises OSError naming
    the file, its temp file removed and the older checkpoints kept."""
    path = directory / f"ckpt-{step:09d}.pt"
    remove_stale_temps(directory)
    try:
        with atomic_path(path, fsync=True) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as e:  # torch reports a failed write (ENOSPC, EFBIG) as RuntimeError
        raise OSError(f"cannot write checkpoint {path} ({type(e).__name__}: {e}); disk full or over quota? "
                      f"The previous checkpoints are kept") from e
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temp files of checkpoint writers that were killed (any process but this one:
    only rank 0 of one run writes a run directory's checkpoints)."""
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            m = _TEMP.match(p.name)
            if m and int(m.group(1)) != os.getpid():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_latest(directory: Path, fresh_start: bool = False) -> dict | None:
    """The newest readable checkpoint; a corrupt or truncated one is skipped with a warning. None
    when there is none; when there are some but none loads, UnreadableCheckpoints, unless
    fresh_start: then None (the caller starts from step 0 and sets them aside)."""
    failures = []
    for path in reversed(list_checkpoints(directory)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a trainer checkpoint")
            state["_path"] = str(path)
            return state
        except Exception as e:  # truncated zip, bad pickle opcode, refused global, wrong content: fall back
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            log.warning("checkpoint %s is unreadable (%s); falling back to the previous one", path, why)
            failures.append((path, why))
    if failures and not fresh_start:
        raise UnreadableCheckpoints(directory, failures)
    if failures:
        log.warning("fresh_start: none of the %d checkpoints of %s loads; starting from step 0", len(failures),
                    directory)
    return None


def set_aside(directory: Path) -> list[Path]:
    """Move the checkpoints of `directory` to directory/unreadable/ (kept for a post-mortem, out
    of the way of the new run's checkpoints and of its pruning)."""
    aside = directory / UNREADABLE_DIR
    aside.mkdir(parents=True, exist_ok=True)
    moved = []
    for p in list_checkpoints(directory):
        target = aside / p.name
        n = 1
        while target.exists():
            target, n = aside / f"{p.name}.{n}", n + 1
        try:
            p.rename(target)
            moved.append(target)
        except FileNotFoundError:  # another process of the run moved it first
            pass
    return moved
