"""The trainer's checkpoint: one typed, versioned record (`Checkpoint`), its files, and the resume
from the newest readable one.

The loop (trainer/loop.py) writes a Checkpoint at its checkpoint steps; prepare (trainer/prepare.py)
reads the newest back and fit resumes from it. Nothing else writes or reads a checkpoint's keys:
`to_state()` is what goes to disk, `from_state()` what comes back, and a file of another format
version is refused naming the file and both versions. Files without a "version" key are version 1
(the task's state under "extra"; before issue 16 without loader position, layout or bad samples)
and still load.

Files are ckpt-<step>.pt, written atomically, the last K kept; loaded with
torch.load(weights_only=True): only tensors and plain containers, never pickled code. A corrupt
latest file falls back to the previous one. A run directory whose checkpoints are all unreadable
(or refused by weights_only) is an error, not a silent start from step 0 over the old run;
`fresh_start=true` asks for that start explicitly.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
_TEMP = re.compile(r"^\.ckpt-\d{9}\.pt\.(\d+)-[0-9a-f]+\.tmp$")  # pipeline.atomic.temp_sibling's names
UNREADABLE_DIR = "unreadable"


@dataclass(frozen=True)
class LoaderPosition:
    """Where the step after the checkpoint's is in the data: batch `batch` of epoch `epoch`."""
    epoch: int
    batch: int


@dataclass(frozen=True)
class Layout:
    """The processes a checkpoint was written with; a resume compares them (trainer.loop)."""
    world_size: int
    batch_size: int  # global
    rank_batch: int
    workers: int     # loader workers per process

    @classmethod
    def of(cls, batch_size: int, world_size: int, workers: int) -> Layout:
        return cls(world_size, batch_size, batch_size // world_size, workers)


@dataclass(frozen=True)
class BadSampleTally:
    """The run's samples dropped as undecodable so far: their number and 'shard:key: reason' names."""
    count: int = 0
    names: tuple[str, ...] = ()


class CheckpointVersionError(ValueError):
    """A checkpoint file of a format version this code does not read."""


@dataclass(frozen=True, kw_only=True, eq=False)
class Checkpoint:
    """Everything a run resumes from, at the end of global step `step`. Only tensors and plain
    values: the file loads with weights_only=True. VERSION is the format to_state writes."""
    VERSION: ClassVar[int] = 2
    KEYS: ClassVar[tuple[str, ...]] = ("version", "step", "samples", "model", "optimizer", "scaler", "rng_cpu",
                                       "config", "task_state", "loader", "layout", "bad_samples")
    step: int
    samples: int                       # step * global batch
    model: dict                        # the plain module's state_dict
    optimizer: dict
    scaler: dict                       # GradScaler (disabled unless fp16)
    rng_cpu: torch.Tensor              # torch's CPU RNG state
    config: dict                       # the run's resolved config (trainer.config.to_dict)
    task_state: dict                   # the entry point's Task.state_dict() (an EMA, SwAV's queue)
    loader: LoaderPosition | None      # None: a version-1 file written before it was recorded
    layout: Layout | None              # likewise
    bad_samples: BadSampleTally = BadSampleTally()
    path: str | None = None            # the file it was read from (not saved)

    def to_state(self) -> dict:
        """What torch.save writes: the current version's keys."""
        return {"version": self.VERSION, "step": self.step, "samples": self.samples, "model": self.model,
                "optimizer": self.optimizer, "scaler": self.scaler, "rng_cpu": self.rng_cpu, "config": self.config,
                "task_state": self.task_state,
                "loader": dataclasses.asdict(self.loader) if self.loader else None,
                "layout": dataclasses.asdict(self.layout) if self.layout else None,
                "bad_samples": {"count": self.bad_samples.count, "names": list(self.bad_samples.names)}}

    @classmethod
    def from_state(cls, state, path) -> Checkpoint:
        """The record of a loaded file; another version is a CheckpointVersionError, a missing or
        unknown key a ValueError, each naming the file."""
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"{path}: not a trainer checkpoint")
        version = state.get("version", 1)
        if version == 1:
            state = _from_version_1(state, path)
        elif version != cls.VERSION:
            raise CheckpointVersionError(
                f"{path}: checkpoint format version {version!r}, this code reads version {cls.VERSION} (and the "
                "unversioned version 1): resume it with the code that wrote it, or start another run directory")
        keys = set(cls.KEYS)
        if set(state) != keys:
            raise ValueError(f"{path}: not a version-{cls.VERSION} checkpoint: keys missing "
                             f"{sorted(keys - set(state))}, unknown {sorted(set(state) - keys)}")
        loader, layout, bad = state["loader"], state["layout"], state["bad_samples"]
        return cls(step=int(state["step"]), samples=int(state["samples"]), model=state["model"],
                   optimizer=state["optimizer"], scaler=state["scaler"], rng_cpu=state["rng_cpu"],
                   config=state["config"], task_state=state["task_state"],
                   loader=LoaderPosition(**loader) if loader is not None else None,
                   layout=Layout(**layout) if layout is not None else None,
                   bad_samples=BadSampleTally(int(bad["count"]), tuple(bad["names"])), path=str(path))

    def without_weights(self) -> Checkpoint:
        """The record less its model, optimizer and scaler state (once they are loaded into the
        run's own, not held in memory twice)."""
        return dataclasses.replace(self, model={}, optimizer={}, scaler={})


def _from_version_1(state: dict, path) -> dict:
    """A version-1 state as the current version's keys: the task's state was "extra"; files of
    before issue 16 lack the loader position, layout and bad samples; the oldest hold keys since
    dropped (num_classes, labels)."""
    core = ("step", "samples", "model", "optimizer", "scaler", "rng_cpu", "config")
    missing = [k for k in core if k not in state]
    if missing:
        raise ValueError(f"{path}: not a version-1 checkpoint: keys missing {missing}")
    return {"version": Checkpoint.VERSION, **{k: state[k] for k in core}, "task_state": state.get("extra", {}),
            "loader": state.get("loader"), "layout": state.get("layout"),
            "bad_samples": state.get("bad_samples") or {"count": 0, "names": []}}


class UnreadableCheckpoints(RuntimeError):
    """Every checkpoint of a run directory failed to load; `failures` is [(path, reason)]."""

    def __init__(self, directory: Path, failures: list[tuple[Path, str]]):
        self.directory, self.failures = directory, failures
        listed = "; ".join(f"{p.name}: {why}" for p, why in failures)
        super().__init__(
            f"{directory}: none of its {len(failures)} checkpoint(s) can be loaded ({listed}). Refusing to start "
            f"from step 0 over the old run: fix or remove them, or set fresh_start=true to start again from step 0 "
            f"(they are then moved to {directory / UNREADABLE_DIR}/)")


def save_checkpoint(directory: Path, ckpt: Checkpoint, keep: int) -> Path:
    """Write ckpt-<step>.pt atomically (a kill mid-write leaves only a hidden temp file, which the
    loader ignores and the next save removes); a failed write (disk full) raises OSError naming
    the file, its temp file removed and the older checkpoints kept."""
    path = directory / f"ckpt-{ckpt.step:09d}.pt"
    remove_stale_temps(directory)
    try:
        with atomic_path(path, fsync=True) as tmp:
            torch.save(ckpt.to_state(), tmp)
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


def read_checkpoint(path: Path) -> Checkpoint:
    """The record of one file (torch.load with weights_only=True, on the CPU)."""
    return Checkpoint.from_state(torch.load(path, map_location="cpu", weights_only=True), path)


def load_latest(directory: Path, fresh_start: bool = False) -> Checkpoint | None:
    """The newest readable checkpoint; a corrupt or truncated one is skipped with a warning. None
    when there is none; when there are some but none loads, UnreadableCheckpoints, unless
    fresh_start: then None (the caller starts from step 0 and sets them aside). A file of another
    format version is not unreadable: CheckpointVersionError, whatever fresh_start says."""
    failures = []
    for path in reversed(list_checkpoints(directory)):
        try:
            return read_checkpoint(path)
        except CheckpointVersionError:
            raise
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
