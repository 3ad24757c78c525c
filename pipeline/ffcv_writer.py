"""FFCV .beton from finished WebDataset shards (the same stored images, in the same order: sample
i of the .beton is stored image i of shards.json).

FFCV has no variable-length field: labels are a fixed-size int32 array padded with -1 plus a
count; the padding size is the largest label count in the data and is recorded in shards.json.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.wds import decode, locate_samples, read_located, stop

LABEL_PAD_VALUE = -1


def require_ffcv():
    try:
        import ffcv  # noqa: F401
    except Exception as e:  # ImportError, or a missing shared library at import time
        raise RuntimeError(
            "FFCV is not available (" + str(e).splitlines()[0] + "). `make setup` installs it; it needs the "
            "system packages pkg-config, libopencv-dev and libturbojpeg0-dev. Or build only WebDataset "
            "shards: --format wds") from None


class ShardSamples:
    """Random access to the samples of tar shards, in file order (stored image i is the i-th),
    through member offsets (no extraction); parsed and decoded by pipeline/wds.py, and any damage,
    an undecodable image included, stops the writer (FFCV cannot skip inside its pipeline)."""

    def __init__(self, shard_paths: list[str], label_pad: int):
        self.label_pad = label_pad
        self.index = [(path, key, spans) for path in shard_paths for key, spans in locate_samples(path)]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        sample = read_located(*self.index[i])
        img = decode(sample, stop)
        labels = np.full(self.label_pad, LABEL_PAD_VALUE, dtype=np.int32)
        labels[: len(sample.labels)] = sample.labels
        return img, labels, len(sample.labels), i


def write_beton(shard_paths: list[str], out_path: str, label_pad: int, quality: int = 90,
                num_workers: int = 2) -> dict:
    require_ffcv()
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.writer import DatasetWriter

    ds = ShardSamples(shard_paths, label_pad)
    out = Path(out_path)
    # FFCV's max_resolution bounds the LONGER side; the shard JPEGs already have their shorter
    # side <= max_side, so no further resize: both formats hold the same pixels.
    fields = {"image": RGBImageField(write_mode="jpg", max_resolution=None, jpeg_quality=quality),
              "labels": NDArrayField(np.dtype("int32"), (label_pad,)),
              "num_labels": IntField(), "index": IntField()}
    os.environ.setdefault("TQDM_DISABLE", "1")  # FFCV's per-sample progress bar floods job logs
    with atomic_path(out) as tmp:
        DatasetWriter(str(tmp), fields, num_workers=num_workers).from_indexed_dataset(ds)
    return {"file": out.name, "images": len(ds), "label_pad": label_pad, "bytes": out.stat().st_size,
            "jpeg_quality": quality}
