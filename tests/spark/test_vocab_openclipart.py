"""The vocabulary job on the real openclipart corpus against a plain-Python computation."""
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.ingest_openclipart import main as ingest
from jobs.vocab import VocabConfig, run
from pipeline.normalize import normalize
from pipeline.wordnet import get_synsets

CORPUS = Path("/usr/share/openclipart")
pytestmark = pytest.mark.skipif(not (CORPUS / "png").is_dir(), reason="openclipart-png not installed")


def reference_vocab(manifest_rows, wn, min_count=2):
    """Listing 1 by hand: per image distinct normalized hashtags, f >= min_count, group by synsets."""
    per_image = {r["image_id"]: {normalize(t) for t in r["hashtags"]} - {""} for r in manifest_rows}
    counts = defaultdict(int)
    for tags in per_image.values():
        for t in tags:
            counts[t] += 1
    groups = defaultdict(list)
    for t, n in counts.items():
        if n >= min_count:
            syn = get_synsets(t, wn)
            if syn:
                groups["+".join(syn)].append(t)
    out = {}
    for key, tags in groups.items():
        images = sum(1 for ts in per_image.values() if ts & set(tags))
        name = sorted(tags, key=lambda t: (-counts[t], t))[0]
        out[key] = (name, sorted(tags), images)
    return out


def test_openclipart_vocab_matches_reference(spark, tmp_path, wn):
    ingest(["--root", str(CORPUS), "--out", str(tmp_path / "m")])
    manifest = tmp_path / "m" / "manifest.parquet"
    stats = run(spark, VocabConfig(manifest=str(manifest), out=str(tmp_path / "vocab")))
    rows = pq.read_table(manifest).to_pylist()
    expected = reference_vocab(rows, wn)
    vocab = pq.read_table(tmp_path / "vocab" / "vocab.parquet").to_pylist()
    got = {v["key"]: (v["name"], sorted(v["hashtags"]), v["images"]) for v in vocab}
    assert got == expected
    assert [v["label"] for v in vocab] == list(range(len(vocab)))
    order = [(-v["images"], v["key"]) for v in vocab]
    assert order == sorted(order)
    assert stats["rows_dropped"]["no_hashtags"] == sum(1 for r in rows if not r["hashtags"])
    assert stats["get_synsets_calls"] == stats["distinct_hashtags"] - stats["hashtags_dropped"]["below_min_count"]
    assert len(vocab) > 200  # openclipart's keywords are real: hundreds of canonical labels
