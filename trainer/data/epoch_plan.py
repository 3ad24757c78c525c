"""How one epoch of a sample index is read from shards of unique images: pure numpy, no I/O.

The shards hold every stored image once; an epoch's sample index says how many copies of each
image the epoch holds (trainer/data/sample_index.py). For a streaming reader (WebDataset):

- Readers. Global reader g = worker * world_size + rank. The shards, in an order shuffled with
  (seed, epoch) when training (file order otherwise), go one by one to the reader with the
  fewest samples so far (ties: the lowest g), so readers differ by at most one shard's samples.
- Items. A reader reads its shards in that order and each image once; the image's copies are
  consecutive items of its read sequence.
- Emission. Item r (read rank) gets the key r + buffer * u with u ~ U(0, 1) drawn with
  (seed, epoch, reader); items are emitted by key. An item is never emitted before the items
  read more than `buffer` places ahead of it arrive, so at most about `buffer` images' encoded
  bytes are held, and the copies of an image spread over `buffer` emissions instead of landing
  side by side. Evaluation emits in read order.
- Batches. A rank's batch j is built by its worker j mod W from that worker's emitted items,
  batch after batch, so DataLoader's round-robin over workers yields j = 0, 1, ... in order.
  Every rank yields the same number of batches n = min over readers of (W * full batches + w);
  the samples beyond (less than about one shard per reader) are counted as dropped.
- Resume at batch s: physical worker p serves logical worker (s + p) mod W from its local batch
  ceil((s - w) / W) on; nothing emitted earlier is decoded, and shards all of whose items were
  emitted earlier are not opened.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReaderItems:
    """One reader's epoch: its shards and items in reading order, and the emission order."""
    shards: np.ndarray         # shard ids, reading order
    read_image: np.ndarray     # [items] stored-image index of each item, reading order
    read_position: np.ndarray  # [items] the sample's position in the epoch's index, reading order
    read_rank: np.ndarray      # [items] emission k emits item read_rank[k]

    def __len__(self) -> int:
        return len(self.read_image)

    @property
    def image(self) -> np.ndarray:
        """[items] the stored image of each emitted item, emission order."""
        return self.read_image[self.read_rank]

    @property
    def position(self) -> np.ndarray:
        return self.read_position[self.read_rank]


def assign_shards(shard_samples: np.ndarray, order: np.ndarray, readers: int) -> list[list[int]]:
    """Shards (in `order`) to readers, each to the one with the fewest samples so far."""
    if len(order) < readers:
        raise ValueError(f"{len(order)} shards cannot feed {readers} readers (ranks x loader workers): "
                         "write smaller shards or use fewer workers")
    load = np.zeros(readers, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(readers)]
    for s in order:
        g = int(np.argmin(load))  # first minimum: ties go to the lowest reader
        out[g].append(int(s))
        load[g] += int(shard_samples[s])
    return out


def shard_order(n_shards: int, seed: int, epoch: int, train: bool) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_shards) if train else np.arange(n_shards)


def emission_order(n_items: int, buffer: int, rng: np.random.Generator | None) -> np.ndarray:
    """Read ranks in emission order: by r + buffer * u (u uniform), or read order when rng is None."""
    if rng is None or n_items == 0:
        return np.arange(n_items)
    keys = np.arange(n_items, dtype=np.float64) + buffer * rng.random(n_items)
    return np.argsort(keys, kind="stable")


def reader_items(images: np.ndarray, copies: np.ndarray, positions: np.ndarray, shards: list[int],
                 shard_first: np.ndarray, shard_images: np.ndarray, buffer: int,
                 rng: np.random.Generator | None) -> ReaderItems:
    """The items of a reader reading `shards`. images/copies: the epoch's stored images with at
    least one copy, ascending, and their copy counts; positions: the samples' positions, grouped
    by image in the same order (copies[i] of them for images[i])."""
    starts = np.concatenate([[0], np.cumsum(copies)])
    img_parts, pos_parts = [], []
    for s in shards:
        a, b = np.searchsorted(images, [shard_first[s], shard_first[s] + shard_images[s]])
        img_parts.append(np.repeat(images[a:b], copies[a:b]))
        pos_parts.append(positions[starts[a]:starts[b]])
    image = np.concatenate(img_parts) if img_parts else np.zeros(0, np.int64)
    position = np.concatenate(pos_parts) if pos_parts else np.zeros(0, np.int64)
    return ReaderItems(np.asarray(shards, dtype=np.int64), image, position, emission_order(len(image), buffer, rng))


def rank_batches(reader_samples: np.ndarray, world_size: int, workers: int, batch_size: int) -> int:
    """n: the batches every rank yields; reader_samples[g] for global reader g = w * world + r."""
    per = reader_samples.reshape(workers, world_size) // batch_size  # [w, r] full batches
    w = np.arange(workers)[:, None]
    n = int((workers * per + w).min())
    return n


def worker_batches(n: int, workers: int, w: int, start: int = 0) -> range:
    """Local batch numbers logical worker w yields when the rank yields batches start..n-1."""
    first = max(0, -(-(start - w) // workers))
    last = -(-(n - w) // workers)  # batches j < n with j = w mod W
    return range(first, max(first, last))


def logical_worker(physical: int, workers: int, start: int) -> int:
    """The logical worker a physical DataLoader worker serves when the rank resumes at batch `start`."""
    return (start + physical) % workers
