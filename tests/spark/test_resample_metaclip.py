"""jobs/resample.py --strategy metaclip: keep rates against MetaCLIP's formula, determinism, the
per-epoch index of varying length as the loaders read it, guard rails."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats as st

from jobs.resample import ResampleConfig, epoch_seed, run as resample
from schemas.sample_index import read_sample_index_meta
from tests.helpers import ROOT
from tests.helpers.jobkit import content, fake_shard_set, read_samples, write_labeled
from trainer.data.sample_index import SampleIndex
from trainer.data.shard_set import load_shard_set

CAP, EPOCHS, SEED = 50, 4, 3
# (labels, images): f = 2000, 200, 20 for labels 0, 1, 2. With T = 50, p_h = 0.025, 0.25, 1 and
# p_i = 1 - prod (1 - p_h): [0] 0.025; [0, 1] 1 - 0.975 * 0.75 = 0.26875; [0, 2] and [2] 1; [1] 0.25
CLASSES = {(0,): (1975, 0.025), (0, 1): (20, 0.26875), (0, 2): (5, 1.0), (1,): (180, 0.25), (2,): (15, 1.0)}
EXPECTED = 1975 * 0.025 + 20 * 0.26875 + 5 + 180 * 0.25 + 15  # sum p_i = 119.75
# kept samples per label: sum of p_i over its images, and the variance sum p_i (1 - p_i)
PER_LABEL = {0: (1975 * 0.025 + 20 * 0.26875 + 5, 1975 * 0.025 * 0.975 + 20 * 0.26875 * 0.73125),
             1: (20 * 0.26875 + 180 * 0.25, 20 * 0.26875 * 0.73125 + 180 * 0.25 * 0.75), 2: (20.0, 0.0)}


def rows():
    out = []
    for labels, (n, _) in CLASSES.items():
        for _ in range(n):
            out.append({"image_id": f"im{len(out):05d}", "image": f"{len(out)}.jpg", "labels": list(labels),
                        "importance": 1.0, "tail": 2 in labels})
    return out


def metaclip(lab, out, **kw):
    return ResampleConfig(labeled=lab, out=str(out), strategy="metaclip", cap=CAP, seed=SEED, rows_per_bucket=100,
                          **kw)


def index_epoch(out: Path, e: int) -> list[tuple[int, int]]:
    t = pq.read_table(out / "index" / f"epoch-{e:05d}")
    return sorted(zip(t["position"].to_pylist(), t["image"].to_pylist()))


@pytest.fixture(scope="module")
def balanced(spark, tmp_path_factory):
    """The labeled table, a shard set storing all but three images, and a 4-epoch metaclip index."""
    d = tmp_path_factory.mktemp("metaclip")
    table = rows()
    lab = write_labeled(d / "lab", table, num_classes=3)
    rejected = {"im00000", "im00001", "im01999"}  # two [0] images, and a [0, 2] one (kept every epoch)
    stored = [r["image_id"] for r in table if r["image_id"] not in rejected][::-1]
    shards = fake_shard_set(d / "shards", stored, shard_size=256)
    (shards / "_SUCCESS").touch()  # finished, for the trainer's reader
    stats = resample(spark, metaclip(lab, d / "s", shards=str(shards), epochs=EPOCHS))
    return {"dir": d, "rows": table, "lab": lab, "shards": shards, "stored": stored, "rejected": rejected,
            "out": d / "s", "stats": stats}


def test_keep_rates_fit_the_formula(balanced):
    out, table, stored = balanced["out"], balanced["rows"], balanced["stored"]
    labels_of = {r["image_id"]: tuple(r["labels"]) for r in table}
    kept = Counter()
    for e in range(EPOCHS):
        images = [stored[img] for _, img in index_epoch(out, e)]
        assert len(images) == len(set(images))  # a subset: each image at most once per epoch
        kept.update(labels_of[i] for i in images)
    trials = Counter(labels_of[i] for i in stored)
    for labels, (_, p) in CLASSES.items():
        n = trials[labels] * EPOCHS
        if p == 1.0:
            assert kept[labels] == n, labels  # a label under the cap keeps every image, every epoch
        else:
            assert st.binomtest(kept[labels], n, p).pvalue > 1e-4, labels
    # the test can fail: MetaCLIP 1's rule read as a sum (0.275), or no cap on label 0, is rejected
    assert st.binomtest(kept[(0,)], trials[(0,)] * EPOCHS, 0.05).pvalue < 1e-4
    assert st.binomtest(kept[(1,)], trials[(1,)] * EPOCHS, 0.5).pvalue < 1e-4


def test_stats_record_each_epoch(balanced):
    stats, out = balanced["stats"], balanced["out"]
    m = stats["metaclip"]
    assert m["cap"] == CAP and m["label_images"] == [2000, 200, 20]
    assert [e["seed"] for e in m["epochs"]] == [epoch_seed(SEED, e) for e in range(EPOCHS)]
    samples, _ = read_samples(out)
    assert stats["samples"] == len(samples) == m["epochs"][0]["samples"]
    assert stats["splits"]["all"]["unique_images"] == len({s["image_id"] for s in samples}) == len(samples)
    # samples.parquet is epoch 0: its label counts are the first epoch's
    assert m["epochs"][0]["label_samples"] == [sum(lb in s["labels"] for s in samples) for lb in range(3)]
    for e in m["epochs"]:
        assert e["expected_samples"] == pytest.approx(EXPECTED, abs=1e-6)
        assert abs(e["samples"] - EXPECTED) < 4 * sum(n * p * (1 - p) for n, p in CLASSES.values()) ** 0.5
    # a head label keeps about T images (a little more: its images kept for their other labels)
    for label, (mean, var) in PER_LABEL.items():
        got = np.mean([e["label_samples"][label] for e in m["epochs"]])
        assert abs(got - mean) <= 3.9 * (var / EPOCHS) ** 0.5 + 1e-9, (label, got, mean)


def test_index_epochs_differ_in_length_and_the_loaders_read_them(balanced):
    out, stats, rejected, stored = balanced["out"], balanced["stats"], balanced["rejected"], balanced["stored"]
    meta = read_sample_index_meta(out)
    samples, _ = read_samples(out)
    epochs = [index_epoch(out, e) for e in range(EPOCHS)]
    image_of = {i: k for k, i in enumerate(stored)}
    # epoch 0 is samples.parquet's draw bound to the shards, positions kept, rejected images dropped
    assert epochs[0] == sorted((s["position"], image_of[s["image_id"]]) for s in samples
                               if s["image_id"] not in rejected)
    for e in range(EPOCHS):
        drawn = stats["metaclip"]["epochs"][e]["samples"]
        assert meta.samples[e] + meta.rejected_samples[e] == drawn
        positions = [p for p, _ in epochs[e]]
        assert len(positions) == meta.samples[e] and len(set(positions)) == len(positions)
        assert min(positions) >= 0 and max(positions) < drawn  # positions 0..K-1, less the rejected
    assert sorted(s["position"] for s in samples) == list(range(len(samples)))
    assert len(set(meta.samples)) > 1  # epochs of different lengths
    assert len({frozenset(img for _, img in ep) for ep in epochs}) == EPOCHS  # a fresh draw per epoch
    index = SampleIndex(load_shard_set(balanced["shards"]), out)
    for e in range(EPOCHS + 1):  # epoch E reuses index epoch 0
        images, positions = index.epoch_order(e)
        assert index.samples(e) == meta.samples[e % EPOCHS] == len(images)
        assert sorted(zip(positions.tolist(), images.tolist())) == epochs[e % EPOCHS]


def test_same_draw_whatever_the_partitioning_and_master(spark, balanced, tmp_path):
    table = balanced["rows"]
    lab5 = write_labeled(tmp_path / "lab5", table[::-1], files=5, num_classes=3)
    old = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set("spark.sql.shuffle.partitions", "13")
        spark.conf.set("spark.sql.adaptive.enabled", "false")
        resample(spark, metaclip(lab5, tmp_path / "b", shards=str(balanced["shards"]), epochs=EPOCHS))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
        spark.conf.set("spark.sql.adaptive.enabled", "true")
    out = balanced["out"]
    assert content(tmp_path / "b") == content(out)
    assert all(index_epoch(tmp_path / "b", e) == index_epoch(out, e) for e in range(EPOCHS))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    r = subprocess.run([str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
                        "--conf", "spark.sql.shuffle.partitions=3", str(ROOT / "jobs" / "resample.py"),
                        "--labeled", lab5, "--out", str(tmp_path / "c"), "--strategy", "metaclip", "--cap", str(CAP),
                        "--seed", str(SEED), "--rows-per-bucket", "100"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert content(tmp_path / "c") == content(out)
    assert json.loads((tmp_path / "c" / "stats.json").read_text())["metaclip"]["epochs"] == \
        balanced["stats"]["metaclip"]["epochs"][:1]


def test_bad_flags_say_what_to_do(tmp_path):
    lab = "unused"
    cases = [(dict(strategy="metaclip"), "needs --cap"),
             (dict(strategy="metaclip", cap=0), "needs --cap"),
             (dict(strategy="metaclip", cap=5, num_samples=100), "--num-samples 100 does not apply"),
             (dict(cap=5, num_samples=100), "--cap applies to --strategy metaclip only, not importance"),
             (dict(strategy="uniform"), "--num-samples must be >= 1 with --strategy uniform"),
             (dict(strategy="metaclips", cap=5), "valid: importance, sqrt, uniform, natural, metaclip")]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            ResampleConfig(labeled=lab, out="x", **kw)
    from jobs.resample import main
    with pytest.raises(SystemExit):  # argparse's error, exit 2, for the command line
        main(["--labeled", lab, "--out", "x", "--strategy", "metaclip"])
