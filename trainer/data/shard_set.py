"""A finished shard directory (jobs/shards.py): its shards.json, read through the one owner of that
file (schemas/shard_set.py), with each shard's path. The FFCV reader checks its `ffcv` entry.

Stored images are numbered densely in shard order (schemas/shard_set.py); one number names an
image in the tars and in the .beton."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.wds import ShardError
from schemas.metadata import MetadataError
from schemas.shard_set import read_shard_set_meta


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    images: int
    bytes: int
    first_image: int
    sha256: str = ""  # of the tar, as the shards job recorded it


@dataclass(frozen=True)
class ShardSet:
    root: Path
    num_classes: int
    images: int
    shards: tuple[ShardInfo, ...]
    ffcv: dict | None  # {"file": "images.beton", "label_pad": L, ...} when the job wrote one
    text: str | None = None  # the manifest column whose text each sample's .json holds ("text"), if any


def load_shard_set(root) -> ShardSet:
    """ROOT's shard set; a directory without _SUCCESS is refused (the job did not finish), and so is
    a shards.json the owner refuses (another version, unreadable, inconsistent), as a ShardError."""
    root = Path(root)
    if not root.is_dir():
        raise ShardError(f"no finished shards: shard directory {root} does not exist (run jobs/shards.py)")
    if not (root / "_SUCCESS").exists():
        raise ShardError(f"incomplete shards: {root} has no _SUCCESS marker (jobs/shards.py has not finished "
                         "or failed); rerun it")
    try:
        meta = read_shard_set_meta(root)
    except MetadataError as e:
        raise ShardError(str(e)) from e
    shards = tuple(ShardInfo(root / s.name, s.images, s.bytes, s.first_image, s.sha256) for s in meta.shards)
    return ShardSet(root, meta.num_classes, meta.images, shards, meta.ffcv, meta.text)


def batches_per_rank(samples: int, batch_size: int, world_size: int) -> int:
    """floor(N / (world * B)): the same on every rank; an epoch of 0 batches is an error."""
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size ({batch_size}) and world_size ({world_size}) must be >= 1")
    n = samples // (world_size * batch_size)
    if n == 0:
        raise ValueError(f"{samples} samples make no full batch of {batch_size} on each of {world_size} ranks")
    return n


def check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, world_size={world_size})")
