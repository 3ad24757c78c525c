"""The shard directory's index (shards.json), read only once the shards job has finished: the one
reader of shards.json (the FFCV reader checks its `ffcv` entry).

Shards hold every stored image once. Stored images are numbered densely in shard order: shard i
holds images first_image .. first_image + images - 1, in file order; the FFCV file holds the same
images in the same order, so one number names an image in both formats."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.wds import ShardError


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    images: int
    bytes: int
    first_image: int
    sha256: str = ""  # of the tar, as the shards job recorded it


@dataclass(frozen=True)
class ShardIndex:
    root: Path
    num_classes: int
    images: int
    shards: tuple[ShardInfo, ...]
    ffcv: dict | None  # {"file": "images.beton", "label_pad": L, ...} when the job wrote one
    text: str | None = None  # the manifest column whose text each sample's .json holds ("text"), if any


def load_index(root) -> ShardIndex:
    """Parse ROOT/shards.json; a directory without _SUCCESS is refused (the job did not finish)."""
    root = Path(root)
    if not root.is_dir():
        raise ShardError(f"no finished shards: shard directory {root} does not exist (run jobs/shards.py)")
    if not (root / "_SUCCESS").exists():
        raise ShardError(f"incomplete shards: {root} has no _SUCCESS marker (jobs/shards.py has not finished "
                         "or failed); rerun it")
    try:
        meta = json.loads((root / "shards.json").read_text())
        names = [str(s["name"]) for s in meta["shards"]]
        shards = tuple(ShardInfo(root / n, int(s["images"]), int(s["bytes"]), int(s["first_image"]),
                                 str(s.get("sha256", ""))) for n, s in zip(names, meta["shards"]))
        num_classes, images = int(meta["num_classes"]), int(meta["images"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{root}/shards.json is unreadable or lacks num_classes/images/shards: {e!r}") from e
    first = 0
    for n, s in zip(names, shards):
        if s.images < 1:  # the shards job lists no empty shard: this index was edited or damaged
            raise ShardError(f"{root}/shards.json: shard {n} lists {s.images} images (an empty shard has no images "
                             "to read); rerun jobs/shards.py")
        if "/" in n or "\\" in n or n in ("", ".", ".."):  # names stay inside root
            raise ShardError(f"{root}/shards.json: bad shard name {n!r}")
        if s.first_image != first:
            raise ShardError(f"{root}/shards.json: shard {n} starts at image {s.first_image}, expected {first}")
        first += s.images
    if first != images:
        raise ShardError(f"{root}/shards.json: shard images sum to {first}, not {images}")
    return ShardIndex(root, num_classes, images, shards, meta.get("ffcv"), meta.get("text"))


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
