"""A sample index bound to a shard set: how many copies of each stored image an epoch holds.

Written by `jobs/resample.py --shards DIR` under SAMPLES/index/:
- index.json: {"epochs": E, "shards_sha256": sha256 of the shard set's shards.json,
  "samples": [per epoch], "rejected_samples": [per epoch], ...}
- epoch-NNNNN/ (Parquet): (image, position) per sample, `image` the stored-image index of the
  shard set (shards.json's first_image + ordinal in the shard), sorted by image;
- shard_samples.parquet: (epoch, shard, samples).
Epoch e of training uses index epoch e mod E (E = 1: one draw reused every epoch).

Without an index every stored image is one sample per epoch, its position its image index.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.wds import ShardError
from trainer.data.shard_index import ShardIndex

INDEX_DIR = "index"


def epoch_dir(root, epoch: int) -> Path:
    return Path(root) / INDEX_DIR / f"epoch-{epoch:05d}"


class SampleIndex:
    """Per-epoch copies of the stored images of `shards`; `root` None: each image once, its
    position its image index, or (shuffle_seed given) a permutation seeded with (shuffle_seed, epoch)."""

    def __init__(self, shards: ShardIndex, root=None, shuffle_seed: int | None = None):
        self.shards, self.root = shards, Path(root) if root is not None else None
        self.shuffle_seed = shuffle_seed
        self.shard_first = np.array([s.first_image for s in shards.shards], dtype=np.int64)
        self.shard_images = np.array([s.images for s in shards.shards], dtype=np.int64)
        self.epochs, self._shard_samples = 1, None
        if self.root is None:
            return
        meta_path = self.root / INDEX_DIR / "index.json"
        try:
            meta = json.loads(meta_path.read_text())
            self.epochs = int(meta["epochs"])
            bound_to = str(meta["shards_sha256"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ShardError(f"{meta_path}: no sample index bound to shards (run jobs/resample.py --shards "
                             f"{shards.root}): {e!r}") from e
        have = hashlib.sha256((shards.root / "shards.json").read_bytes()).hexdigest()
        if bound_to != have:
            raise ShardError(f"{self.root}: this sample index was bound to another shard set than {shards.root} "
                             f"(shards.json sha256 {bound_to[:12]}..., here {have[:12]}...): rerun jobs/resample.py "
                             f"--shards {shards.root}")
        import pyarrow.parquet as pq

        t = pq.read_table(self.root / INDEX_DIR / "shard_samples.parquet")
        counts = np.zeros((self.epochs, len(shards.shards)), dtype=np.int64)
        counts[t["epoch"].to_numpy(), t["shard"].to_numpy()] = t["samples"].to_numpy()
        self._shard_samples = counts

    def source(self, epoch: int) -> int:
        return epoch % self.epochs

    def shard_samples(self, epoch: int) -> np.ndarray:
        """Samples of each shard's images in the epoch."""
        if self._shard_samples is None:
            return self.shard_images.copy()
        return self._shard_samples[self.source(epoch)]

    def samples(self, epoch: int) -> int:
        return int(self.shard_samples(epoch).sum())

    def rows(self, epoch: int, shards: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images ascending, copies of each, positions grouped by image) for the images of `shards`."""
        if self.root is None:
            images = np.concatenate([np.arange(self.shard_first[s], self.shard_first[s] + self.shard_images[s])
                                     for s in sorted(shards)] or [np.zeros(0, np.int64)])
            return images, np.ones(len(images), np.int64), images.copy()
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        ds = _dataset(str(epoch_dir(self.root, self.source(epoch))))
        parts = []
        for s in sorted(shards):
            lo, hi = int(self.shard_first[s]), int(self.shard_first[s] + self.shard_images[s])
            parts.append(ds.to_table(columns=["image", "position"],
                                     filter=(pads.field("image") >= lo) & (pads.field("image") < hi)))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        import pyarrow as pa

        t = pa.concat_tables(parts)
        t = t.take(pc.sort_indices(t, [("image", "ascending"), ("position", "ascending")]))
        image = t["image"].to_numpy()
        images, copies = np.unique(image, return_counts=True)
        return images, copies.astype(np.int64), t["position"].to_numpy()

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(stored images, positions) of every sample of the epoch, in position order."""
        if self.root is None:
            n = int(self.shard_images.sum())
            images = np.arange(n, dtype=np.int64)
            if self.shuffle_seed is not None:
                images = np.random.default_rng([self.shuffle_seed, epoch]).permutation(n)
            return images, np.arange(n, dtype=np.int64)
        t = _dataset(str(epoch_dir(self.root, self.source(epoch)))).to_table(columns=["image", "position"])
        t = t.sort_by("position")
        return t["image"].to_numpy(), t["position"].to_numpy()


@lru_cache(maxsize=4)
def _dataset(path: str):
    import pyarrow.dataset as pads

    if not Path(path).is_dir():
        raise ShardError(f"{path}: missing epoch of the sample index")
    return pads.dataset(path, format="parquet")
