"""The Spark jobs' inputs as the stage before writes them (a manifest, labeled.parquet, a shard
set's metadata), readers of their outputs, and captions whose hashtags are hard to get right."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from schemas.shard_set import ShardSetMeta
from tests.helpers.shardkit import write_meta

ROWS = {  # image_id -> raw hashtags
    "a": ["eggplant", "BrownBear", "newyork", "dog"],
    "b": ["aubergine", "brownbear", "dog"],
    "c": ["Eggplant", "ursus arctos", "dog"],
    "d": ["icecream", "dog", "newyork"],
    "e": ["ice cream", "eggplant", "#dog"],
    "f": ["ice-cream", "zzzz"],
}


def write_manifest(path: Path, rows: dict) -> str:
    t = pa.table({"image_id": list(rows), "image": [f"img/{k}.jpg" for k in rows],
                  "hashtags": list(rows.values())}, schema=schemas.MANIFEST)
    pq.write_table(t, path)
    return str(path)


def write_labeled(d: Path, rows: list[dict], files: int = 1, num_classes: int = 7) -> str:
    """labeled.parquet as jobs/label.py writes it: part files, the class count in the footer."""
    (d / "labeled.parquet").mkdir(parents=True)
    t = schemas.with_class_count(pa.Table.from_pylist(rows, schema=schemas.LABELED), num_classes, str(d / "vocab"))
    for i, chunk in enumerate(np.array_split(np.arange(len(rows)), files)):
        pq.write_table(t.take(pa.array(chunk)), d / "labeled.parquet" / f"part-{i}.parquet")
    return str(d)


def write_labeled_images(d: Path, images: dict, vocab_size: int = 5, seed: int = 0, extra: dict | None = None):
    """labeled.parquet (one row per image, as jobs/label.py writes it) for `images`, with `extra`
    string columns passed through from a manifest ({column: {image_id: value}})."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, i in enumerate(sorted(images)):
        labels = sorted({int(x) for x in rng.integers(0, vocab_size, int(rng.integers(1, 4)))})
        rows.append({"image_id": i, "image": images[i][0], "labels": labels, "importance": 0.5, "tail": k % 3 == 0,
                     **{c: v.get(i) for c, v in (extra or {}).items()}})
    schema = schemas.LABELED
    for c in extra or {}:
        schema = schema.append(pa.field(c, pa.string()))
    (d / "labeled.parquet").mkdir(parents=True, exist_ok=True)
    table = schemas.with_class_count(pa.Table.from_pylist(rows, schema=schema), vocab_size, "vocab")
    pq.write_table(table, d / "labeled.parquet" / "part-0.parquet")
    return rows


def toy_rows(n_head=40, n_tail=25, seed=0):
    """Images with known importance; tail images have larger importance (rarer labels)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_head + n_tail):
        tail = i >= n_head
        f = int(rng.integers(2, 50)) if tail else int(rng.integers(100, 5000))
        rows.append({"image_id": f"img{i:04d}", "image": f"{i}.jpg", "labels": [i % 7],
                     "importance": f ** -0.5, "tail": tail})
    return rows


def read_samples(out: Path):
    t = pq.read_table(out / "samples.parquet")
    schemas.check_schema(t.schema, schemas.SAMPLES, "samples.parquet")
    return t.to_pylist(), json.loads((out / "stats.json").read_text())


def content(out: Path):
    samples, _ = read_samples(out)
    return sorted((s["position"], s["image_id"], tuple(s["labels"]), s["tail"]) for s in samples)


def fake_shard_set(d: Path, image_ids: list[str], shard_size: int) -> Path:
    """shards.json + images.parquet as jobs/shards.py writes them (stored image k = image_ids[k]);
    the tars are not needed to bind an index."""
    d.mkdir(parents=True)
    n = len(image_ids)
    shards = [(f"shard-{s:06d}.tar", min(shard_size, n - f), 0, "") for s, f in enumerate(range(0, n, shard_size))]
    write_meta(d, ShardSetMeta.numbered(7, shards))
    (d / "images.parquet").mkdir()
    pq.write_table(pa.table({"image_id": image_ids, "image": np.arange(n), "shard": np.arange(n) // shard_size,
                             "ordinal": np.arange(n) % shard_size}, schema=schemas.SHARD_IMAGES),
                   d / "images.parquet" / "part-0.parquet")
    return d


# Captions whose hashtags differ between regex engines' ideas of a "word character"; the expected
# tags are written out by hand from the rule in pipeline/normalize.py.
ZWJ, ZWNJ, ACUTE = "\u200d", "\u200c", "\u0301"
FAMILY = f"\U0001F468{ZWJ}\U0001F469{ZWJ}\U0001F467"  # a ZWJ emoji sequence
TRICKY_CAPTIONS = {
    f"family #{FAMILY} and #dog{FAMILY} selfie": ["dog"],   # emoji are not word characters
    f"#cafe{ACUTE} au lait": [f"cafe{ACUTE}"],                # a combining mark stays with its letter
    "#café au lait": ["café"],
    "#क्षत्रिय and #नमस्ते": ["क्षत्रिय", "नमस्ते"],                # Devanagari vowel signs and virama: marks
    f"#سلام{ZWNJ}دنیا!": [f"سلام{ZWNJ}دنیا"],                   # a zero-width non-joiner inside a word
    f"#ice{ZWJ}cream": [f"ice{ZWJ}cream"],
    "#東京タワー、#서울": ["東京タワー", "서울"],
    "#h²o #snake_case #2024 #__x__ #Ⅻ #٣٤": ["h²o", "snake_case", "2024", "__x__", "Ⅻ", "٣٤"],
    "## #a##b #trailing# end#": ["a", "b", "trailing"],
    "#": [],
    "no tags at all": [],
    "#a-b #c.d #e'f": ["a", "c", "e"],
}
