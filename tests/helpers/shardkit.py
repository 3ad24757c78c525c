"""Tiny real shard sets and sample indices for trainer tests, in the layout jobs/shards.py and
jobs/resample.py --shards write; their metadata through its owners (schemas/shard_set.py,
schemas/sample_index.py), never by hand."""
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.wds import Sample, file_sha256, shard_name, write_shard
from schemas.sample_index import INDEX_DIR, SHARD_SAMPLES, SampleIndexMeta, epoch_dir_name, index_file, shard_set_sha256
from schemas.shard_set import ShardSetMeta, read_shard_set_meta, shard_set_file


def write_shard_set(out: Path, members, shard_size: int, num_classes: int, max_side: int = 320) -> Path:
    """Shards of (jpeg, labels) pairs in order (stored image i = the i-th), shards.json, _SUCCESS."""
    out.mkdir(parents=True, exist_ok=True)
    members = list(members)
    shards = []
    for s, start in enumerate(range(0, len(members), shard_size)):
        chunk = members[start:start + shard_size]
        rec = write_shard(out / shard_name(s), [
            Sample(f"{start + k:012d}", jpeg, meta={"image_id": f"im{start + k}", "labels": labels, "tail": False})
            for k, (jpeg, labels) in enumerate(chunk)])
        shards.append((shard_name(s), rec["samples"], rec["bytes"], rec["sha256"]))
    write_meta(out, ShardSetMeta.numbered(num_classes, shards, shard_size=shard_size, max_side=max_side))
    (out / "_SUCCESS").write_text("")
    return out


def write_meta(root: Path, meta: ShardSetMeta) -> None:
    """ROOT's shards.json replaced by `meta` (tests build damaged ones on purpose)."""
    shard_set_file(root).write_text(meta.to_json())


def restate_shard(root: Path, shard: int) -> None:
    """Record shard `shard`'s byte count and sha256 anew after a test rewrote its tar."""
    meta = read_shard_set_meta(root)
    path = root / meta.shards[shard].name
    entries = list(meta.shards)
    entries[shard] = replace(entries[shard], bytes=path.stat().st_size, sha256=file_sha256(path))
    write_meta(root, replace(meta, shards=tuple(entries)))


def add_ffcv(root: Path, label_pad: int, quality: int, num_workers: int) -> None:
    """ROOT/images.beton of ROOT's tars, recorded in shards.json (before any index binds to it)."""
    from pipeline.ffcv_writer import write_beton

    meta = read_shard_set_meta(root)
    ffcv = write_beton([str(root / s.name) for s in meta.shards], str(root / "images.beton"),
                       label_pad=label_pad, quality=quality, num_workers=num_workers)
    write_meta(root, replace(meta, ffcv=ffcv))


def write_sample_index(shards: Path, out: Path, epochs: list[list[int]]) -> Path:
    """A sample index bound to `shards`: epochs[e][p] is the stored image of position p in epoch e."""
    first = np.array([s.first_image for s in read_shard_set_meta(shards).shards])
    root = out / INDEX_DIR
    root.mkdir(parents=True, exist_ok=True)
    rows = {"epoch": [], "shard": [], "samples": []}
    for e, images in enumerate(epochs):
        images = np.asarray(images, dtype=np.int64)
        order = np.lexsort((np.arange(len(images)), images))
        d = root / epoch_dir_name(e)
        d.mkdir()
        pq.write_table(pa.table({"image": images[order], "position": np.arange(len(images))[order]}),
                       d / "part-00000.parquet")
        shard_of = np.searchsorted(first, images, side="right") - 1
        for s, n in zip(*np.unique(shard_of, return_counts=True)):
            rows["epoch"].append(e), rows["shard"].append(int(s)), rows["samples"].append(int(n))
    pq.write_table(pa.table(rows, schema=pa.schema([("epoch", pa.int32()), ("shard", pa.int64()),
                                                    ("samples", pa.int64())])), root / SHARD_SAMPLES)
    meta = SampleIndexMeta(len(epochs), shard_set_sha256(shard_set_file(shards).read_bytes()),
                           tuple(len(x) for x in epochs), (0,) * len(epochs))
    index_file(out).write_text(meta.to_json())
    return out


def make_shards(out: Path, n: int = 96, shard_size: int = 16, num_classes: int = 6, size: int = 40,
                uniform: bool = False, seed: int = 0) -> Path:
    """n images; label of image i is i % num_classes (+ a second label for some), and the image
    is a colour that encodes the label, so a model can learn it. uniform=True: every image is the
    same flat-colour image with the same label (any crop or flip of it is identical)."""
    rng = np.random.default_rng(seed)
    members = []
    for i in range(n):
        label = 0 if uniform else i % num_classes
        labels = [label] if uniform or i % 3 else sorted({label, (label + 1) % num_classes})
        colour = (200, 30, 30) if uniform else tuple(int(c) for c in rng.integers(0, 255, 3) // 4 + 40 * label % 255)
        b = io.BytesIO()
        Image.fromarray(np.full((size, size + 8, 3), colour, np.uint8)).save(b, "JPEG", quality=95)
        members.append((b.getvalue(), labels))
    return write_shard_set(out, members, shard_size, num_classes, max_side=size)
