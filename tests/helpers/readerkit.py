"""Shard sets of unique images for the reader tests (trainer/data), written by the real writers.

Stored image i has a JPEG whose central square holds COLOURS[i] (see jpeg_of) and labels_of(i):
decoding the colour back gives i, so image, labels and the sample index's position can be checked
to stay together through sharding, sampling, shuffling, batching and resuming. The module-scoped
fixtures shards8, shards4 and indexed (tests/conftest.py) are made with it.
"""
import io
import tarfile

import numpy as np
from PIL import Image

from pipeline.wds import shard_name
from tests.helpers.shardkit import add_ffcv, restate_shard, write_shard_set

N, C, SIZE = 37, 6, 16
COLOURS = np.array([(30 + 60 * (i % 4), 30 + 60 * (i // 4 % 4), 30 + 60 * (i // 16)) for i in range(N)])


def labels_of(i):
    return [(i + 2 * j) % C for j in range(1 + i % 3)]  # 1-3 distinct labels


def jpeg_of(i):
    """Gray band | white square with COLOURS[i] in its middle | gray band (portrait for odd i)."""
    side, band = 32 + 4 * (i % 3), 8
    img = np.full((side, side + 2 * band, 3), 128, np.uint8)
    img[:, band:band + side] = 255
    img[side // 4:side - side // 4, band + side // 4:band + side - side // 4] = COLOURS[i]
    if i % 2:
        img = img.transpose(1, 0, 2)  # portrait: the bands above and below
    out = io.BytesIO()
    Image.fromarray(img).save(out, "JPEG", quality=95)
    return out.getvalue()


def make_shards(root, shard_size, n=N, ffcv=False):
    write_shard_set(root, [(jpeg_of(i), labels_of(i)) for i in range(n)], shard_size, C)
    if ffcv:
        add_ffcv(root, label_pad=3, quality=95, num_workers=1)
    return root


def add_member(root, shard, name, data, kind=tarfile.REGTYPE):
    """Append a member to a finished shard and keep shards.json's byte count true."""
    path = root / shard_name(shard)
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        else:
            info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    restate_shard(root, shard)


def index_epochs(n_samples, epochs, seed=0):
    """Epochs of a sample index with repeats: p(image i) ~ 1 + (i % 4 == 0) * 5, like a tail image."""
    rng = np.random.default_rng(seed)
    w = 1.0 + 5.0 * (np.arange(N) % 4 == 0)
    return [rng.choice(N, n_samples, p=w / w.sum()).tolist() for _ in range(epochs)]
