"""WebDataset shards of unique images -> batches of (uint8 images, soft targets, positions) for one
DDP rank, the epoch's samples given by a sample index (trainer/data/sample_index.py).

The layout of an epoch is a pure function of the index's per-shard sample counts, the seed and
the epoch (trainer/data/epoch_plan.py): shards are read sequentially, each in one piece, in a
seeded order (streaming: no range reads); each image is read once and emitted as many times as
the epoch's index holds it, through a shuffle window that holds encoded bytes and decodes only
what it emits. Every rank yields the same number of full batches; the samples beyond are
counted (`dropped`), never silently repeated. Augmentations use a torch RNG seeded from
(seed, epoch, rank, batch), so a batch is the same whichever worker builds it.

Resuming at batch s (set_epoch(epoch, start=s)) decodes nothing before s and opens no shard all
of whose samples were emitted before s; the cost does not grow with s.

Samples are read, validated and decoded by pipeline/wds.py (the tar sample's one owner: unsafe
members refused, nothing unpickled, pipeline.images' decoder with Pillow's decompression-bomb guard).

Bad input, by that module's policy: a damaged sample (a key without its .jpg or .json, a key's
members not side by side, bad metadata, labels outside the shard set's classes) and a shard with
fewer or more images than shards.json says are a ShardError naming 'shard:key'. An image that
does not decode is one too (handler `stop`), unless skip_bad_images (the trainer's loader): then
the sample is dropped from its batch (which is one smaller; the layout of every other batch is
unchanged, so resuming stays exact) and named in the batch's `skipped` (a Skips per batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.wds import Sample, ShardError, Skips, decode, read_samples, stop
from trainer.data.batch import Batch
from trainer.data.epoch_plan import (ReaderItems, assign_shards, logical_worker, rank_batches, reader_items,
                                     shard_order, worker_batches)
from trainer.data.sample_index import SampleIndex
from trainer.data.shard_set import ShardSet, check_rank, load_shard_set
from trainer.data.targets import pad_labels, soft_targets
from trainer.data.transforms import eval_transform, train_transform


@dataclass(frozen=True)
class EpochLayout:
    readers: list[list[int]]   # shards of global reader g = worker * world_size + rank, reading order
    reader_samples: np.ndarray
    batches: int               # per rank
    samples: int               # in the epoch's index
    dropped: int               # of them, beyond the ranks' equal number of full batches


class WdsEpochs(IterableDataset):
    """One rank's epoch as an iterable of full batches; len() is the number of batches."""

    def __init__(self, index: ShardSet, samples: SampleIndex, batch_size: int, rank: int, world_size: int,
                 num_workers: int, train: bool, size: int, seed: int, epoch: int, shuffle_buffer: int,
                 skip_bad_images: bool = False, transform=None):
        check_rank(rank, world_size)
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.index, self.samples, self.batch_size, self.rank = index, samples, batch_size, rank
        self.world_size, self.workers, self.train, self.seed = world_size, max(1, num_workers), train, seed
        self.epoch, self.start, self.shuffle_buffer = epoch, 0, shuffle_buffer
        self.skip_bad_images = skip_bad_images
        self.transform = transform or (train_transform(size) if train else eval_transform(size))
        self.decoded = 0  # images this process tried to decode (workers count their own)
        self._layouts: dict[int, EpochLayout] = {}
        self.layout(epoch)  # fail now, not in a worker, on too few shards or an empty epoch
        for s in index.shards:
            if not s.path.is_file() or s.path.stat().st_size != s.bytes:
                raise ShardError(f"{s.path}: missing, or not the {s.bytes} bytes shards.json records")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        n = self.layout(epoch).batches
        if not 0 <= start <= n:
            raise ValueError(f"start batch {start} outside [0, {n}] for epoch {epoch}")
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.layout(self.epoch).batches

    def layout(self, epoch: int) -> EpochLayout:
        if epoch not in self._layouts:
            counts = self.samples.shard_samples(epoch)
            order = shard_order(len(counts), self.seed, epoch, self.train)
            order = order[counts[order] > 0]  # shards with no sample this epoch are not read
            readers = assign_shards(counts, order, self.world_size * self.workers)
            per = np.array([counts[r].sum() if r else 0 for r in readers], dtype=np.int64)
            n = rank_batches(per, self.world_size, self.workers, self.batch_size)
            if n == 0:
                raise ValueError(f"epoch {epoch}: {int(counts.sum())} samples in {len(order)} shards make no full "
                                 f"batch of {self.batch_size} on every one of {self.world_size} ranks x "
                                 f"{self.workers} loader workers: use fewer workers, smaller batches or shards")
            total = int(counts.sum())
            self._layouts[epoch] = EpochLayout(readers, per, n, total, total - n * self.batch_size * self.world_size)
        return self._layouts[epoch]

    def reader(self, epoch: int, worker: int) -> ReaderItems:
        """The items of logical `worker` of this rank in the epoch."""
        lay = self.layout(epoch)
        g = worker * self.world_size + self.rank
        shards = lay.readers[g]
        images, copies, positions = self.samples.rows(epoch, shards)  # images ascending
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker]) if self.train else None
        return reader_items(images, copies, positions, shards, self.samples.shard_first, self.samples.shard_images,
                            self.shuffle_buffer, rng)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        physical, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if workers != self.workers:
            raise RuntimeError(f"planned for {self.workers} loader workers, running in {workers}")
        epoch, start, b = self.epoch, self.start, self.batch_size
        w = logical_worker(physical, workers, start)
        local = worker_batches(self.layout(epoch).batches, workers, w, start)
        if not local:
            return
        items = self.reader(epoch, w)
        lo, hi = local.start * b, local.stop * b
        emitted_image, emitted_position = items.image, items.position
        needed = emitted_image[lo:hi]
        wanted, want_count = np.unique(needed, return_counts=True)
        remaining = dict(zip(wanted.tolist(), want_count.tolist()))
        first_read = int(items.read_rank[lo:hi].min())  # nothing read before it is needed
        stream = self._stream(items, first_read, remaining)
        held: dict[int, Sample] = {}
        for L in local:
            chunk = []
            for k in range(L * b, (L + 1) * b):
                img = int(emitted_image[k])
                while img not in held:
                    got, sample = next(stream)
                    held[got] = sample
                remaining[img] -= 1
                chunk.append((held[img] if remaining[img] else held.pop(img), int(emitted_position[k])))
            j = L * workers + w  # the rank's batch number
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
                [self.seed, epoch, self.rank, j]).generate_state(1, np.uint64)[0] >> np.uint64(1)))
            # private CPU RNG for the augmentations: the trainer's global RNG stays untouched
            kept, skipped = [], Skips(warn=False)  # the trainer names and counts them (trainer/loop.py)
            handler = skipped if self.skip_bad_images else stop
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.set_state(gen.get_state())
                for sample, position in chunk:
                    pixels = decode(sample, handler)
                    if pixels is not None:
                        kept.append((self.transform(torch.from_numpy(pixels).permute(2, 0, 1)), sample.labels,
                                     position))
            self.decoded += len(chunk)
            if not kept:
                raise ShardError(f"rank {self.rank} epoch {epoch} batch {j}: none of its {b} images decodes: "
                                 + "; ".join(skipped.names))
            targets = soft_targets(pad_labels([lb for _, lb, _ in kept]), self.index.num_classes)
            yield Batch(stack_views([im for im, _, _ in kept]), targets,
                        torch.tensor([p for _, _, p in kept], dtype=torch.int64), tuple(skipped.names))

    def _stream(self, items: ReaderItems, first_read: int, remaining: dict) -> Iterator[tuple[int, Sample]]:
        """(image, sample) for the reader's images still needed, in reading order from the shard
        holding read rank `first_read`; other images are not kept or decoded."""
        info = self.index.shards
        first = self.samples.shard_first
        start_image = int(items.read_image[first_read])
        start_shard = int(np.searchsorted(first, start_image, side="right") - 1)
        shards = items.shards.tolist()
        for s in shards[shards.index(start_shard):]:
            shard, n = info[s], 0
            for sample in read_samples(shard.path, num_classes=self.index.num_classes, handler=stop):
                img = int(first[s]) + n
                n += 1
                if remaining.get(img, 0) > 0:
                    yield img, sample
            if n != shard.images:
                raise ShardError(f"{shard.path}: holds {n} images, shards.json says {shard.images}")
        raise ShardError(f"{self.index.root}: the reader's shards ended before every needed image was read")


def stack_views(images: list) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """[B, 3, S, S] from one view per image; a tuple of those, one per view, from a transform
    that gives several (trainer/data/multicrop.py)."""
    if isinstance(images[0], tuple):
        return tuple(torch.stack(v) for v in zip(*images))
    return torch.stack(images)


class WdsLoader(DataLoader):
    """A DataLoader over WdsEpochs; call set_epoch(e[, start]) before each epoch (as with
    DistributedSampler); epoch_batches(e) is epoch e's number of batches (len() the current one's)."""

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.dataset.set_epoch(epoch, start)
        # DataLoader keeps the len() it last saw and warns when an epoch yields more; epochs of a
        # per-epoch index differ in length, so the count it checks against is this epoch's
        self._IterableDataset_len_called = len(self.dataset)

    def epoch_batches(self, epoch: int) -> int:
        return self.dataset.layout(epoch).batches

    def epoch_stats(self, epoch: int) -> dict:
        lay = self.dataset.layout(epoch)
        return {"samples": lay.samples, "dropped": lay.dropped}

    # The global batch j is the union of the ranks' batches j, each built from its readers (rank x
    # loader worker): another world size or number of workers is another data order.
    order_depends_on = ("world_size", "workers")


def wds_loader(root, batch_size: int, rank: int, world_size: int, num_workers: int, train: bool, size: int = 224,
               seed: int = 0, epoch: int = 0, shuffle_buffer: int = 10000, pin_memory: bool = False,
               sample_index=None, skip_bad_images: bool = False, transform=None) -> WdsLoader:
    """Batches of one rank's share of the WebDataset shards in ROOT, the epochs given by the sample
    index in SAMPLE_INDEX (jobs/resample.py --shards ROOT); without one, and always for evaluation,
    every stored image once per epoch. len() = batches per rank. skip_bad_images: an image that
    does not decode is dropped from its batch and named in Batch.skipped (else a ShardError).
    transform: uint8 [3, H, W] -> a view or a tuple of views (SwAV's MultiCrop) in place of the
    default crop; it draws from torch's global RNG, which each batch seeds."""
    index = load_shard_set(root)
    ds = WdsEpochs(index, SampleIndex(index, sample_index if train else None), batch_size, rank, world_size,
                   num_workers, train, size, seed, epoch, shuffle_buffer, skip_bad_images, transform)
    # Workers are started per epoch (not persistent) so that they see set_epoch's value. Our own
    # generator: DataLoader draws a seed from it every epoch, from the global RNG otherwise.
    return WdsLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                     generator=torch.Generator().manual_seed(seed))
