"""FFCV .beton -> batches of (uint8 images, soft targets, positions) for one DDP rank.

What the trainer must know about FFCV 1.0.2's Loader:
- distributed=True builds torch's DistributedSampler without num_replicas/rank, so it reads them
  from torch.distributed: the process group must be initialized first. We take rank/world_size
  explicitly and refuse to start if they disagree with the process group.
- That sampler pads (drop_last=False) to ceil(N / world) samples per rank by repeating samples from
  the start of the order; the Loader then drops the last partial batch, so every rank gets
  ceil(N / world) // batch_size batches, the same on every rank. That can be one batch more than
  the WebDataset reader's floor(N / (world * batch_size)); use len(loader), not a formula.
- Order: training is a permutation seeded with seed + epoch (one rank) or DistributedSampler's
  (seed, epoch); evaluation is file order (one rank) or DistributedSampler's interleaving
  r, r + world, ... (several ranks). The random crops and flips use numba's RNG, which the seed
  does not reach: training batches are not bit-reproducible.
- "Workers" are threads of one process (numba's thread count is process-wide: the last Loader
  built sets it). Output tensors are reused buffers: move batches to the device before keeping them.
- CenterCropRGBImageDecoder(ratio) crops the central square of side ratio * shorter side, then
  resizes it to size x size. ratio=1.0 (our default) is "resize the shorter side to size, then
  center crop size", the SWAG evaluation and the WebDataset reader's eval_transform;
  ratio=224/256 would be the ImageNet "resize 256, crop 224" convention.
"""
from __future__ import annotations

from typing import Iterator

from pipeline.wds import ShardError
from trainer.data.batch import Batch
from trainer.data.shard_index import batches_per_rank, check_rank, load_index
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


def check_process_group(rank: int, world_size: int) -> None:
    """FFCV's distributed sampler reads torch.distributed; it must agree with our rank/world_size."""
    import torch.distributed as dist

    check_rank(rank, world_size)
    initialized = dist.is_available() and dist.is_initialized()
    if not initialized:
        if world_size > 1:
            raise RuntimeError(f"FFCV shards data by torch.distributed's rank: call "
                               f"torch.distributed.init_process_group before ffcv_loader(world_size={world_size})")
        return
    if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
        raise ValueError(f"ffcv_loader(rank={rank}, world_size={world_size}) disagrees with torch.distributed "
                         f"(rank {dist.get_rank()} of {dist.get_world_size()})")


class FfcvLoader:
    """Iterable of Batch; call set_epoch(e) before each epoch. len() = batches per rank."""

    def __init__(self, loader, num_classes: int, epoch: int):
        self.loader, self.num_classes, self.epoch = loader, num_classes, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        self.loader.next_epoch = self.epoch  # FFCV counts epochs itself; ours is explicit, like the WDS reader
        for images, labels, positions in self.loader:
            yield Batch(images, soft_targets(labels, self.num_classes), positions.long())


def ffcv_loader(root, batch_size: int, rank: int, world_size: int, num_workers: int, train: bool, size: int = 224,
                seed: int = 0, epoch: int = 0, crop_ratio: float = 1.0, os_cache: bool = True,
                batches_ahead: int = 3) -> FfcvLoader:
    """Batches of one rank's share of ROOT/samples.beton (written by jobs/shards.py --format ffcv)."""
    index = load_index(root)
    if not index.ffcv:
        raise ShardError(f"{index.root}/shards.json has no ffcv entry: rerun jobs/shards.py with --format wds,ffcv")
    if not 0 < crop_ratio <= 1:
        raise ValueError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
    path = index.root / index.ffcv["file"]
    if not path.is_file():
        raise ShardError(f"{path}: missing, though shards.json lists it")
    batches_per_rank(index.samples, batch_size, world_size)  # refuse an epoch without a full batch
    import_ffcv()
    check_process_group(rank, world_size)

    from ffcv.fields.decoders import (CenterCropRGBImageDecoder, IntDecoder, NDArrayDecoder,
                                      RandomResizedCropRGBImageDecoder)
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, Squeeze, ToTensor, ToTorchImage

    if train:
        image = [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()]
    else:
        image = [CenterCropRGBImageDecoder((size, size), ratio=crop_ratio)]
    pipelines = {"image": image + [ToTensor(), ToTorchImage()],
                 "labels": [NDArrayDecoder(), ToTensor()],
                 "num_labels": None,  # the -1 padding already says it
                 "position": [IntDecoder(), ToTensor(), Squeeze()]}
    loader = Loader(str(path), batch_size=batch_size, num_workers=max(1, num_workers), os_cache=os_cache,
                    order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL, distributed=world_size > 1,
                    seed=seed, pipelines=pipelines, drop_last=True, batches_ahead=batches_ahead)
    if loader.reader.num_samples != index.samples:
        raise ShardError(f"{path} holds {loader.reader.num_samples} samples, shards.json says {index.samples}")
    labels_shape = tuple(int(d) for d in loader.reader.handlers["labels"].shape)
    if labels_shape != (int(index.ffcv["label_pad"]),):
        raise ShardError(f"{path}: labels field has shape {labels_shape}, shards.json says "
                         f"label_pad {index.ffcv['label_pad']}")
    return FfcvLoader(loader, index.num_classes, epoch)

