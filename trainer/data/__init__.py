"""Shard readers for the trainer: one registry entry per shard format written by jobs/shards.py.

    loader = make_loader("wds", "build/demo/shards", batch_size=256, rank=0, world_size=1,
                         num_workers=4, train=True, size=224, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:  # Batch: images uint8 [B,3,S,S], targets float [B,C], positions int64 [B]
            ...

Both loaders take the same leading arguments; len(loader) is the number of batches, the same
on every rank. With skip_bad_images=True (the trainer's loader) a WebDataset batch drops the
samples whose image does not decode and names them in batch.skipped.
"""
from __future__ import annotations

from trainer.data.batch import Batch
from trainer.data.ffcv_reader import ffcv_loader
from trainer.data.targets import soft_targets
from trainer.data.transforms import eval_transform, model_data_config, train_transform
from trainer.data.wds_reader import wds_loader

LOADERS = {"wds": wds_loader, "ffcv": ffcv_loader}


def make_loader(format: str, root, **kwargs):
    """LOADERS[format](root, **kwargs); an unknown format is a ValueError listing the valid ones."""
    if format not in LOADERS:
        raise ValueError(f"unknown shard format {format!r}; valid: {', '.join(sorted(LOADERS))}")
    return LOADERS[format](root, **kwargs)


__all__ = ["Batch", "LOADERS", "make_loader", "wds_loader", "ffcv_loader", "soft_targets", "train_transform",
           "eval_transform", "model_data_config"]
