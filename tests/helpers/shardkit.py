"""Tiny real shard sets and sample indices for trainer tests, in the layout jobs/shards.py and
jobs/resample.py --shards write (trainer/data/shard_index.py, trainer/data/sample_index.py)."""
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.wds import shard_name, write_shard


def write_shard_set(out: Path, members, shard_size: int, num_classes: int, max_side: int = 320) -> Path:
    """Shards of (jpeg, labels) pairs in order (stored image i = the i-th), shards.json, _SUCCESS."""
    out.mkdir(parents=True, exist_ok=True)
    members = list(members)
    shards, first = [], 0
    for s, start in enumerate(range(0, len(members), shard_size)):
        chunk = members[start:start + shard_size]
        rec = write_shard(out / shard_name(s), [
            (f"{start + k:012d}", jpeg, {"image_id": f"im{start + k}", "labels": labels, "tail": False})
            for k, (jpeg, labels) in enumerate(chunk)])
        shards.append({"name": shard_name(s), "images": rec["samples"], "first_image": first,
                       "bytes": rec["bytes"], "sha256": rec["sha256"]})
        first += rec["samples"]
    (out / "shards.json").write_text(json.dumps({"num_classes": num_classes, "images": first,
                                                 "shard_size": shard_size, "max_side": max_side, "shards": shards}))
    (out / "_SUCCESS").write_text("")
    return out


def write_sample_index(shards: Path, out: Path, epochs: list[list[int]]) -> Path:
    """A sample index bound to `shards`: epochs[e][p] is the stored image of position p in epoch e."""
    meta = json.loads((shards / "shards.json").read_text())
    first = np.array([s["first_image"] for s in meta["shards"]])
    root = out / "index"
    root.mkdir(parents=True, exist_ok=True)
    rows = {"epoch": [], "shard": [], "samples": []}
    for e, images in enumerate(epochs):
        images = np.asarray(images, dtype=np.int64)
        order = np.lexsort((np.arange(len(images)), images))
        d = root / f"epoch-{e:05d}"
        d.mkdir()
        pq.write_table(pa.table({"image": images[order], "position": np.arange(len(images))[order]}),
                       d / "part-00000.parquet")
        shard_of = np.searchsorted(first, images, side="right") - 1
        for s, n in zip(*np.unique(shard_of, return_counts=True)):
            rows["epoch"].append(e), rows["shard"].append(int(s)), rows["samples"].append(int(n))
    pq.write_table(pa.table(rows, schema=pa.schema([("epoch", pa.int32()), ("shard", pa.int64()),
                                                    ("samples", pa.int64())])), root / "shard_samples.parquet")
    (root / "index.json").write_text(json.dumps({
        "epochs": len(epochs), "shards_sha256": hashlib.sha256((shards / "shards.json").read_bytes()).hexdigest(),
        "samples": [len(x) for x in epochs], "rejected_samples": [0] * len(epochs)}))
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
