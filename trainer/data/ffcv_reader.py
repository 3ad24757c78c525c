"""FFCV .beton -> batches of (uint8 images, soft targets, positions) for one DDP rank.

The .beton holds every stored image once (sample i = stored image i). The epoch's order is the
sample index's (trainer/data/sample_index.py): its samples in position order (the draw's seeded
shuffle), handed to FFCV as its own traversal order (`IndexOrder`), so FFCV's JIT pipeline is
untouched. Rank r takes samples r, r + world, ... of that order, n = floor(M / (world * B))
batches each, the same on every rank; evaluation reads every stored image once in file order.
Resuming at batch s starts the order at sample s * B of the rank's share: nothing before it is
read or decoded.

What the trainer must know about FFCV 1.0.2's Loader:
- The random crops and flips use numba's RNG, which no seed reaches: training batches are not
  bit-reproducible, and a resumed run's crops differ from an uninterrupted one's (the samples and
  their order do not).
- "Workers" are threads of one process (numba's thread count is process-wide: the last Loader
  built sets it). Output tensors are reused buffers: move batches to the device before keeping them.
- CenterCropRGBImageDecoder(ratio) crops the central square of side ratio * shorter side, then
  resizes it to size x size. ratio=1.0 (our default) is "resize the shorter side to size, then
  center crop size", the SWAG evaluation and the WebDataset reader's eval_transform;
  ratio=224/256 would be the ImageNet "resize 256, crop 224" convention.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from pipeline.wds import ShardError
from trainer.data.batch import Batch
from trainer.data.sample_index import SampleIndex
from trainer.data.shard_set import batches_per_rank, check_rank, load_shard_set
from trainer.data.targets import soft_targets


def import_ffcv():
    try:
        import ffcv  # noqa: F401
        from ffcv import fields, loader, transforms  # noqa: F401
    except Exception as e:  # ImportError, or a shared library missing at import time
        raise ImportError(f"FFCV cannot be imported ({str(e).splitlines()[0] if str(e) else type(e).__name__}). "
                          "`make setup` installs it; it needs the system packages pkg-config, libopencv-dev and "
                          "libturbojpeg0-dev. Or read the WebDataset shards: format 'wds'") from e
    return ffcv


def index_order(sequence):
    """An FFCV traversal order that is a given sequence of sample indices (reset every epoch)."""
    from ffcv.traversal_order.base import TraversalOrder

    class _Order(TraversalOrder):
        def __init__(self, seq):  # FFCV 1.0.2 calls an order instance with the loader
            self.sequence = seq

        def __call__(self, loader):
            self.loader, self.indices, self.seed = loader, loader.indices, loader.seed
            self.distributed, self.sampler = False, None
            return self

        def sample_order(self, epoch: int):
            return self.sequence
    return _Order(sequence)


class FfcvLoader:
    """Iterable of Batch; call set_epoch(e[, start]) before each epoch. len() = batches per rank."""

    # rank r takes samples r, r + world, ... of one global order, so global batch j is samples
    # [j * B, (j + 1) * B) of it on any world size (B the global batch); workers are threads
    order_depends_on = ()

    def __init__(self, loader, order, samples, num_classes: int, rank: int, world_size: int, batch_size: int,
                 train: bool, epoch: int):
        self.loader, self.order, self.samples, self.num_classes = loader, order, samples, num_classes
        self.rank, self.world_size, self.batch_size, self.train = rank, world_size, batch_size, train
        self.epoch, self.start = epoch, 0

    def epoch_batches(self, epoch: int) -> int:
        return batches_per_rank(self.samples.samples(epoch), self.batch_size, self.world_size)

    def epoch_stats(self, epoch: int) -> dict:
        n = self.samples.samples(epoch)
        return {"samples": n, "dropped": n - self.epoch_batches(epoch) * self.batch_size * self.world_size}

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        n = self.epoch_batches(epoch)
        if not 0 <= start <= n:
            raise ValueError(f"start batch {start} outside [0, {n}] for epoch {epoch}")
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.epoch_batches(self.epoch)

    def share(self, epoch: int, start: int = 0):
        """(stored images, positions) this rank reads in the epoch from batch `start` on."""
        images, positions = self.samples.epoch_order(epoch)
        n, b = self.epoch_batches(epoch), self.batch_size
        sl = slice(self.rank, n * b * self.world_size, self.world_size)
        images, positions = images[sl][start * b:], positions[sl][start * b:]
        return images.astype(np.uint64), positions

    def __iter__(self) -> Iterator[Batch]:
        import torch

        images, positions = self.share(self.epoch, self.start)
        self.order.sequence = images
        self.loader.first_traversal_order = images  # FFCV's len() and truncation read it
        self.loader.next_epoch = self.epoch
        b = self.batch_size
        for k, (imgs, labels) in enumerate(self.loader):
            yield Batch(imgs, soft_targets(labels, self.num_classes),
                        torch.from_numpy(positions[k * b:(k + 1) * b].astype("int64")))


def check_process_group(rank: int, world_size: int) -> None:
    """Where torch.distributed runs, it must agree with our rank/world_size."""
    import torch.distributed as dist

    check_rank(rank, world_size)
    if not (dist.is_available() and dist.is_initialized()):
        return
    if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
        raise ValueError(f"ffcv_loader(rank={rank}, world_size={world_size}) disagrees with torch.distributed "
                         f"(rank {dist.get_rank()} of {dist.get_world_size()})")


def ffcv_loader(root, batch_size: int, rank: int, world_size: int, num_workers: int, train: bool, size: int = 224,
                seed: int = 0, epoch: int = 0, crop_ratio: float = 1.0, os_cache: bool = True,
                batches_ahead: int = 3, sample_index=None, skip_bad_images: bool = False,
                transform=None) -> FfcvLoader:
    """Batches of one rank's share of ROOT's .beton (jobs/shards.py --format ffcv), the epochs given
    by the sample index in SAMPLE_INDEX (jobs/resample.py --shards ROOT); without one, and always for
    evaluation, every stored image once per epoch (shuffled with (seed, epoch) when training).

    skip_bad_images is accepted for the same signature as wds_loader, with nothing to skip: images
    are decoded inside FFCV's JIT pipeline, where no sample can be dropped, and every image of a
    .beton was decoded when it was written (pipeline/ffcv_writer.py fails on one that does not).
    transform (a torchvision transform, e.g. SwAV's multi-crop) is refused: FFCV's decoders run in
    its compiled pipeline, which has no colour jitter or blur; such trainers read data_format=wds."""
    if transform is not None:
        raise ValueError(f"{root}: the FFCV reader applies only its own crop and flip, not {type(transform).__name__} "
                         "(multi-crop views, colour jitter, blur): use data_format=wds")
    shard_set = load_shard_set(root)
    if not shard_set.ffcv:
        raise ShardError(f"{shard_set.root}/shards.json has no ffcv entry: rerun jobs/shards.py with --format wds,ffcv")
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
    path = shard_set.root / shard_set.ffcv["file"]
    if not path.is_file():
        raise ShardError(f"{path}: missing, though shards.json lists it")
    index = SampleIndex(shard_set, sample_index if train else None, shuffle_seed=seed if train else None)
    batches_per_rank(index.samples(epoch), batch_size, world_size)  # refuse an epoch without a full batch
    import_ffcv()
    check_process_group(rank, world_size)

    from ffcv.fields.decoders import CenterCropRGBImageDecoder, NDArrayDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    if train:
        image = [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()]
    else:
        image = [CenterCropRGBImageDecoder((size, size), ratio=crop_ratio)]
    pipelines = {"image": image + [ToTensor(), ToTorchImage()],
                 "labels": [NDArrayDecoder(), ToTensor()],
                 "num_labels": None,  # the -1 padding already says it
                 "index": None}       # the order says which image each sample is
    order = index_order(np.zeros(0, dtype=np.uint64))
    loader = Loader(str(path), batch_size=batch_size, num_workers=max(1, num_workers), os_cache=os_cache,
                    order=order, distributed=False, seed=seed, pipelines=pipelines, drop_last=True,
                    batches_ahead=batches_ahead)
    if loader.reader.num_samples != shard_set.images:
        raise ShardError(f"{path} holds {loader.reader.num_samples} images, shards.json says {shard_set.images}")
    labels_shape = tuple(int(d) for d in loader.reader.handlers["labels"].shape)
    if labels_shape != (int(shard_set.ffcv["label_pad"]),):
        raise ShardError(f"{path}: labels field has shape {labels_shape}, shards.json says "
                         f"label_pad {shard_set.ffcv['label_pad']}")
    return FfcvLoader(loader, order, index, shard_set.num_classes, rank, world_size, batch_size, train, epoch)
