"""A sample index bound to a shard set: how many copies of each stored image an epoch holds.

Written by `jobs/resample.py --shards DIR` under SAMPLE_INDEX/index/, in the layout of
schemas/sample_index.py (index.json, its one owner; epoch-NNNNN/: (image, position) per sample,
`image` the stored-image index of the shard set, sorted by image; shard_samples.parquet).
Epoch e of training uses index epoch e mod E (E = 1: one draw reused every epoch).

Without an index every stored image is one sample per epoch, its position its image index.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.wds import ShardError
from schemas.metadata import MetadataError
from schemas.sample_index import (INDEX_DIR, SHARD_SAMPLES, epoch_dir_name, read_sample_index_meta,
                                  shard_set_sha256)
from schemas.shard_set import shard_set_file
from trainer.data.shard_set import ShardSet


def epoch_dir(root, epoch: int) -> Path:
    return Path(root) / INDEX_DIR / epoch_dir_name(epoch)


class SampleIndex:
    """Per-epoch copies of the stored images of `shards`; `root` None: each image once, its
    position its image index, or (shuffle_seed given) a permutation seeded with (shuffle_seed, epoch)."""

    def __init__(self, shards: ShardSet, root=None, shuffle_seed: int | None = None):
        self.shards, self.root = shards, Path(root) if root is not None else None
        self.shuffle_seed = shuffle_seed
        self.shard_first = np.array([s.first_image for s in shards.shards], dtype=np.int64)
        self.shard_images = np.array([s.images for s in shards.shards], dtype=np.int64)
        self.epochs, self._shard_samples = 1, None
        if self.root is None:
            return
        try:
            meta = read_sample_index_meta(self.root)
        except MetadataError as e:
            raise ShardError(f"no sample index bound to shards (run jobs/resample.py --shards {shards.root}): "
                             f"{e}") from e
        self.epochs = meta.epochs
        have = shard_set_file(shards.root).read_bytes()
        if not meta.bound_to(have):
            raise ShardError(f"{self.root}: this sample index was bound to another shard set than {shards.root} "
                             f"(shards.json sha256 {meta.shards_sha256[:12]}..., here "
                             f"{shard_set_sha256(have)[:12]}...): rerun jobs/resample.py --shards {shards.root}")
        import pyarrow.parquet as pq

        t = pq.read_table(self.root / INDEX_DIR / SHARD_SAMPLES)
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
