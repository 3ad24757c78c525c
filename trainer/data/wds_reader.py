"""WebDataset shards -> batches of (uint8 images, soft targets, positions) for one DDP rank.

Epochs are sample counts and every rank yields the same number of full batches,
floor(N / (world_size * batch_size)), so DDP never waits on a rank that ran out of data
(webdataset issues 188, 250). How an epoch is laid out, a pure function of the shard sizes:

- Training shuffles the shard order with (seed, epoch), the same on every rank; evaluation keeps
  the file order. Shard i of that order goes to global worker i mod (world_size * workers),
  numbered worker * world_size + rank, so ranks differ by at most one shard.
- A rank's batches are split between its loader workers in proportion to their samples. A worker
  that runs out starts its shards again; one with more samples than its quota stops early.
- Training passes each worker's samples through a bounded shuffle buffer, and augments with a
  torch RNG seeded from (seed, epoch, rank, worker): the same arguments give the same batches.

Shards are read with pipeline.wds.iter_shard, which refuses unsafe members; nothing is unpickled,
images are decoded by Pillow (its decompression-bomb guard stays on) and must be JPEG.
"""
from __future__ import annotations

import io
import itertools
import json
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.wds import ShardError, iter_shard
from trainer.data.batch import Batch
from trainer.data.shard_index import ShardIndex, batches_per_rank, check_rank, load_index
from trainer.data.targets import pad_labels, soft_targets
from trainer.data.transforms import eval_transform, train_transform


def plan_epoch(shard_samples: list[int], order: list[int], world_size: int, workers: int,
               batch_size: int) -> list[list[tuple[list[int], int]]]:
    """plan[rank][worker] = (shard indices in reading order, number of batches to yield)."""
    total = world_size * workers
    if len(shard_samples) < total:
        raise ValueError(f"{len(shard_samples)} shards cannot feed {world_size} ranks x {workers} loader workers "
                         f"= {total} readers: write smaller shards or use fewer workers")
    shards = [[[] for _ in range(workers)] for _ in range(world_size)]
    for i, s in enumerate(order):
        g = i % total
        shards[g % world_size][g // world_size].append(s)
    n_batches = batches_per_rank(sum(shard_samples), batch_size, world_size)
    plan = []
    for rank_shards in shards:
        sizes = [sum(shard_samples[s] for s in ws) for ws in rank_shards]
        # largest-remainder split of the rank's batches in proportion to each worker's samples
        quota = [n_batches * n // sum(sizes) for n in sizes]
        by_remainder = sorted(range(workers), key=lambda w: (-(n_batches * sizes[w] % sum(sizes)), w))
        for w in by_remainder[: n_batches - sum(quota)]:
            quota[w] += 1
        plan.append(list(zip(rank_shards, quota)))
    return plan


def decode_jpeg(data: bytes, where: str) -> torch.Tensor:
    """uint8 [3, H, W] from JPEG bytes; anything else (PNG, GIF, ...) is refused."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise ShardError(f"{where}: image is {im.format}, shards hold only JPEG")
            arr = np.array(im.convert("RGB"))
    except (OSError, SyntaxError) as e:  # PIL's errors for damaged or unrecognised data
        raise ShardError(f"{where}: cannot decode image: {e}") from e
    return torch.from_numpy(arr).permute(2, 0, 1)


class WdsEpochs(IterableDataset):
    """One rank's epoch as an iterable of full batches; len() is the number of batches."""

    def __init__(self, index: ShardIndex, batch_size: int, rank: int, world_size: int, num_workers: int,
                 train: bool, size: int, seed: int, epoch: int, shuffle_buffer: int):
        check_rank(rank, world_size)
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        self.index, self.batch_size, self.rank, self.world_size = index, batch_size, rank, world_size
        self.workers, self.train, self.seed, self.epoch = max(1, num_workers), train, seed, epoch
        self.shuffle_buffer = shuffle_buffer
        self.transform = train_transform(size) if train else eval_transform(size)
        self.plan(epoch)  # fail now, not in a worker, on too few shards or an empty epoch
        for s in index.shards:
            if not s.path.is_file() or s.path.stat().st_size != s.bytes:
                raise ShardError(f"{s.path}: missing, or not the {s.bytes} bytes shards.json records")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return batches_per_rank(self.index.samples, self.batch_size, self.world_size)

    def plan(self, epoch: int) -> list[list[tuple[list[int], int]]]:
        n = len(self.index.shards)
        order = np.random.default_rng([self.seed, epoch]).permutation(n).tolist() if self.train else list(range(n))
        return plan_epoch([s.samples for s in self.index.shards], order, self.world_size, self.workers,
                          self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if workers != self.workers:
            raise RuntimeError(f"planned for {self.workers} loader workers, running in {workers}")
        shard_ids, n_batches = self.plan(self.epoch)[self.rank][worker]
        seeds = np.random.SeedSequence([self.seed, self.epoch, self.rank, worker])
        rng = np.random.default_rng(seeds)
        torch_seed = int(seeds.generate_state(1, np.uint64)[0] >> np.uint64(1))
        samples = itertools.islice(self._passes(shard_ids, rng), n_batches * self.batch_size)
        rng_state = None
        for _ in range(n_batches):
            chunk = list(itertools.islice(samples, self.batch_size))
            # private CPU RNG for the augmentations: the trainer's global RNG stays untouched
            with torch.random.fork_rng(devices=[]):
                if rng_state is None:
                    torch.random.default_generator.manual_seed(torch_seed)
                else:
                    torch.set_rng_state(rng_state)
                images = torch.stack([self.transform(decode_jpeg(jpg, where)) for jpg, _, _, where in chunk])
                rng_state = torch.get_rng_state()
            targets = soft_targets(pad_labels([lb for _, lb, _, _ in chunk]), self.index.num_classes)
            yield Batch(images, targets, torch.tensor([p for _, _, p, _ in chunk], dtype=torch.int64))

    def _passes(self, shard_ids: list[int], rng: np.random.Generator) -> Iterator[tuple]:
        """The worker's samples, pass after pass (each pass shuffled on its own when training)."""
        for _ in itertools.count():
            samples = self._read(shard_ids)
            yield from (self._shuffled(samples, rng) if self.train else samples)

    def _shuffled(self, samples: Iterator[tuple], rng: np.random.Generator) -> Iterator[tuple]:
        buf = []
        for s in samples:
            buf.append(s)
            if len(buf) >= self.shuffle_buffer:
                j = int(rng.integers(len(buf)))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    def _read(self, shard_ids: list[int]) -> Iterator[tuple[bytes, list[int], int, str]]:
        """(jpeg, labels, position, 'shard:key') per sample, with the metadata checked."""
        num_classes = self.index.num_classes
        for s in shard_ids:
            info = self.index.shards[s]
            n = 0
            for key, parts in iter_shard(info.path):
                where = f"{info.path}:{key}"
                if set(parts) != {"jpg", "json"}:
                    raise ShardError(f"{where}: expected members .jpg and .json, found {sorted(parts)}")
                try:
                    meta = json.loads(parts["json"])
                    labels, position = [int(x) for x in meta["labels"]], int(meta["position"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ShardError(f"{where}: bad metadata: {e!r}") from e
                if not labels or not all(0 <= x < num_classes for x in labels):
                    raise ShardError(f"{where}: labels {labels} empty or outside [0, {num_classes})")
                yield parts["jpg"], labels, position, where
                n += 1
            if n != info.samples:
                raise ShardError(f"{info.path}: holds {n} samples, shards.json says {info.samples}")


class WdsLoader(DataLoader):
    """A DataLoader over WdsEpochs; call set_epoch(e) before each epoch (as with DistributedSampler)."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def wds_loader(root, batch_size: int, rank: int, world_size: int, num_workers: int, train: bool, size: int = 224,
               seed: int = 0, epoch: int = 0, shuffle_buffer: int = 1000, pin_memory: bool = False) -> WdsLoader:
    """Batches of one rank's share of the WebDataset shards in ROOT; len() = batches per rank."""
    ds = WdsEpochs(load_index(root), batch_size, rank, world_size, num_workers, train, size, seed, epoch,
                   shuffle_buffer)
    # Workers are started per epoch (not persistent) so that they see set_epoch's value. Our own
    # generator: DataLoader draws a seed from it every epoch, from the global RNG otherwise.
    return WdsLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                     generator=torch.Generator().manual_seed(seed))
