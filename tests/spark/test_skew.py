"""A manifest where one hashtag is on 90% of the rows goes through vocab and label like a uniform
one: no per-hashtag shuffle, so no task holds the hot hashtag's rows (tests/helpers/skewkit.py runs the
jobs in a fresh SparkContext with a small spark.executor.pyspark.memory and driver memory, and
counts the shuffle records written from Spark's event log: a per-hashtag gather of the rows would
write about 4x as many and fails the test)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.normalize import normalize
from tests.helpers import ROOT
from tests.helpers.jobkit import write_manifest
from tests.helpers.launch import project_env

NOUNS = ["dog", "cat", "apple", "car", "boat", "tree", "horse", "banana", "truck", "chair", "table", "lamp",
         "guitar", "piano", "violin", "tiger", "lion", "eagle", "shark", "rose"]
N = 300_000
SHUFFLE_RECORDS_PER_IMAGE = 1.1  # one id hash per image (the duplicate-id check) + small partial counts


def manifests(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    others = [[NOUNS[1 + j] for j in rng.choice(len(NOUNS) - 1, size=2, replace=False)] for _ in range(N)]
    hot = rng.random(N) < 0.9
    skewed = {f"s{i:07d}": (["Dog"] if hot[i] else []) + others[i] for i in range(N)}
    uniform = {f"u{i:07d}": [NOUNS[int(j)] for j in rng.choice(len(NOUNS), size=3 if hot[i] else 2, replace=False)]
               for i in range(N)}
    return write_manifest(tmp_path / "skewed.parquet", skewed), write_manifest(tmp_path / "uniform.parquet", uniform)


def test_a_hashtag_on_90_percent_of_rows_runs_in_bounded_memory(tmp_path):
    skewed, uniform = manifests(tmp_path)
    out = tmp_path / "res.json"
    subprocess.run([sys.executable, "-m", "tests.helpers.skewkit", str(out), uniform, skewed], cwd=ROOT,
                   env=project_env(), check=True, timeout=900)
    res = json.loads(out.read_text())
    # the jobs' outputs against plain Python: images per hashtag, labelled images
    for m in (uniform, skewed):
        rows = pq.read_table(m).to_pylist()
        f = {}
        for r in rows:
            for h in {normalize(t) for t in r["hashtags"]}:
                f[h] = f.get(h, 0) + 1
        vocab = {r["name"]: r["images"] for r in pq.read_table(Path(m).with_suffix("") / "vocab" / "vocab.parquet").to_pylist()}
        assert vocab["dog"] == f["dog"] and vocab["cat"] == f["cat"]
        assert res[m]["labeled"] == N
    assert vocab["dog"] > 0.89 * N  # the skewed manifest really is skewed
    # what crosses a shuffle is per image at most (the duplicate-id hashes) and partial counts, never
    # the (image, hashtag) rows (2.9 per image here): exploding them into a group-by wrote 3.9 N
    shuffled = {m: res[m]["shuffle_records_written"] for m in (uniform, skewed)}
    print("shuffle records written:", shuffled)
    assert all(0 < n <= SHUFFLE_RECORDS_PER_IMAGE * N for n in shuffled.values()), shuffled
    assert shuffled[skewed] <= 1.05 * shuffled[uniform], shuffled
    # the Python workers' peak memory does not grow with the hot hashtag's share
    peak_uniform, peak_skewed = res[uniform]["python_worker_peak_rss"], res[skewed]["python_worker_peak_rss"]
    assert 0 < peak_skewed <= 1.25 * peak_uniform + (32 << 20), (peak_uniform, peak_skewed)
