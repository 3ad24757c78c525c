"""jobs/resample.py: exact sizes, statistical fit of the draws, determinism, guard rails."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats as st

import schemas
from jobs.resample import ResampleConfig, run as resample
from schemas.sample_index import read_sample_index_meta
from tests.helpers import ROOT
from tests.helpers.jobkit import content, fake_shard_set, read_samples, toy_rows, write_labeled


def test_importance_split_sizes_and_fit(spark, tmp_path):
    rows = toy_rows()
    lab = write_labeled(tmp_path / "lab", rows)
    m, alpha = 30_000, 0.7
    stats = resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / "s"), num_samples=m, alpha=alpha, seed=3))
    samples, _ = read_samples(tmp_path / "s")
    assert len(samples) == m
    # the class count recorded in labeled.parquet travels into samples.parquet
    assert schemas.class_count_of(tmp_path / "s" / "samples.parquet") == (7, str(tmp_path / "lab" / "vocab"))
    assert sorted(s["position"] for s in samples) == list(range(m))
    n_tail = sum(s["tail"] for s in samples)
    # exact allocation: round(alpha*M) head samples; inside the binomial 99.9% interval of 1-alpha
    assert n_tail == m - round(alpha * m)
    lo, hi = st.binom.interval(0.999, m, 1 - alpha)
    assert lo <= n_tail <= hi
    counts = Counter(s["image_id"] for s in samples)
    for split, is_tail in (("head", False), ("tail", True)):
        imgs = [r for r in rows if r["tail"] == is_tail]
        w = np.array([r["importance"] for r in imgs])
        n = sum(counts[r["image_id"]] for r in imgs)
        got = np.array([counts[r["image_id"]] for r in imgs])
        assert st.chisquare(got, n * w / w.sum()).pvalue > 0.001, split
        # ... and the same counts are rejected against uniform probabilities (the test can fail)
        assert st.chisquare(got, np.full(len(imgs), n / len(imgs))).pvalue < 1e-6, split
        assert stats["splits"][split]["samples"] == n
        assert stats["splits"][split]["unique_images"] == sum(1 for r in imgs if counts[r["image_id"]])
    # the shuffle interleaves head and tail
    first = [s["tail"] for s in sorted(samples, key=lambda s: s["position"])[:1000]]
    assert 200 < sum(first) < 400


@pytest.mark.parametrize("strategy", ["uniform", "sqrt", "natural"])
def test_wsl_strategies_fit_their_formula(spark, tmp_path, strategy):
    rng = np.random.default_rng(5)
    # labels with very different frequencies; images carry 1-2 labels
    sizes = [200, 60, 20, 5]
    rows, i = [], 0
    for label, size in enumerate(sizes):
        for _ in range(size):
            labels = sorted({label, int(rng.integers(0, 4))}) if rng.random() < 0.3 else [label]
            rows.append({"image_id": f"im{i:05d}", "image": "x", "labels": labels, "importance": 1.0, "tail": False})
            i += 1
    f = Counter(lb for r in rows for lb in r["labels"])
    g = {"uniform": lambda x: 1.0, "sqrt": lambda x: x ** 0.5, "natural": lambda x: float(x)}[strategy]
    w = np.array([sum(g(f[lb]) / f[lb] for lb in r["labels"]) for r in rows])
    m = 60_000
    lab = write_labeled(tmp_path / "lab", rows, num_classes=len(sizes))
    resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / "s"), num_samples=m, strategy=strategy, seed=1))
    samples, stats = read_samples(tmp_path / "s")
    counts = Counter(s["image_id"] for s in samples)
    got = np.array([counts[r["image_id"]] for r in rows])
    assert got.sum() == m and stats["splits"]["all"]["samples"] == m
    assert st.chisquare(got, m * w / w.sum()).pvalue > 0.001
    # the test can fail: the same counts are rejected under another strategy's formula
    other = {"uniform": "natural", "sqrt": "natural", "natural": "uniform"}[strategy]
    g2 = {"uniform": lambda x: 1.0, "natural": lambda x: float(x)}[other]
    w2 = np.array([sum(g2(f[lb]) / f[lb] for lb in r["labels"]) for r in rows])
    assert st.chisquare(got, m * w2 / w2.sum()).pvalue < 1e-6


def test_same_seed_same_output_whatever_the_partitioning(spark, tmp_path):
    rows = toy_rows(300, 200, seed=2)
    lab1 = write_labeled(tmp_path / "lab1", rows, files=1)
    lab7 = write_labeled(tmp_path / "lab7", rows[::-1], files=7)
    cfg = dict(num_samples=5000, seed=11, rows_per_bucket=50)
    resample(spark, ResampleConfig(labeled=lab1, out=str(tmp_path / "a"), **cfg))
    old = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set("spark.sql.shuffle.partitions", "13")
        spark.conf.set("spark.sql.adaptive.enabled", "false")
        resample(spark, ResampleConfig(labeled=lab7, out=str(tmp_path / "b"), **cfg))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
        spark.conf.set("spark.sql.adaptive.enabled", "true")
    assert content(tmp_path / "a") == content(tmp_path / "b")
    resample(spark, ResampleConfig(labeled=lab1, out=str(tmp_path / "c"), **{**cfg, "seed": 12}))
    assert content(tmp_path / "a") != content(tmp_path / "c")
    # and in another JVM with one core: spark-submit --master local[1]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    r = subprocess.run([str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
                        "--conf", "spark.sql.shuffle.partitions=3", str(ROOT / "jobs" / "resample.py"),
                        "--labeled", lab7, "--out", str(tmp_path / "d"), "--num-samples", "5000", "--seed", "11",
                        "--rows-per-bucket", "50"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert content(tmp_path / "a") == content(tmp_path / "d")


def read_epoch(samples: Path, e: int) -> list[tuple[int, int]]:
    t = pq.read_table(samples / "index" / f"epoch-{e:05d}")
    return sorted(zip(t["position"].to_pylist(), t["image"].to_pylist()))


def test_index_bound_to_shards_per_epoch(spark, tmp_path):
    rows = toy_rows(60, 40, seed=4)
    lab = write_labeled(tmp_path / "lab", rows)
    rejected = {r["image_id"] for r in rows[::9]}  # images the shards job could not store
    stored = [r["image_id"] for r in rows if r["image_id"] not in rejected][::-1]  # any stored order
    shards = fake_shard_set(tmp_path / "shards", stored, shard_size=8)
    out = tmp_path / "s"
    stats = resample(spark, ResampleConfig(labeled=lab, out=str(out), num_samples=3000, seed=5, shards=str(shards),
                                           epochs=3))
    samples, _ = read_samples(out)
    image_of = {i: k for k, i in enumerate(stored)}
    # epoch 0 is samples.parquet's draw, bound: each sample of a stored image keeps its position
    assert read_epoch(out, 0) == sorted((s["position"], image_of[s["image_id"]]) for s in samples
                                        if s["image_id"] in image_of)
    n_rejected = sum(s["image_id"] in rejected for s in samples)
    meta = read_sample_index_meta(out).to_dict()
    assert n_rejected > 0 and meta["rejected_samples"][0] == n_rejected and meta["samples"][0] == 3000 - n_rejected
    assert meta["epochs"] == 3 and stats["index"]["epochs"] == 3
    epochs = [read_epoch(out, e) for e in range(3)]
    assert epochs[1] != epochs[0] and epochs[2] != epochs[1]  # a fresh draw per epoch
    per_shard = pq.read_table(out / "index" / "shard_samples.parquet").to_pylist()
    for e in range(3):
        assert len(epochs[e]) == meta["samples"][e] == sum(r["samples"] for r in per_shard if r["epoch"] == e)
        want = Counter(img // 8 for _, img in epochs[e])
        assert {r["shard"]: r["samples"] for r in per_shard if r["epoch"] == e} == dict(want)
    # the later epochs follow the same importance weights as the first (chi-square on stored images)
    w = {image_of[r["image_id"]]: r["importance"] for r in rows if r["image_id"] in image_of}
    for e in (1, 2):
        head = [img for _, img in epochs[e] if not rows_by_image(rows, stored[img])["tail"]]
        imgs = sorted(k for k in w if not rows_by_image(rows, stored[k])["tail"])
        got = np.array([Counter(head)[k] for k in imgs])
        expect = np.array([w[k] for k in imgs])
        assert st.chisquare(got, got.sum() * expect / expect.sum()).pvalue > 0.001


def rows_by_image(rows, image_id):
    return next(r for r in rows if r["image_id"] == image_id)


def test_unique_images_subset_is_seeded(spark, tmp_path):
    rows = toy_rows(300, 200, seed=6)
    lab = write_labeled(tmp_path / "lab", rows)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / name), num_samples=4000, seed=seed,
                                       unique_images=100))
    ids = {k: {s["image_id"] for s in read_samples(tmp_path / k)[0]} for k in "abc"}
    assert len(ids["a"]) <= 100 and ids["a"] == ids["b"] and ids["a"] != ids["c"]
    samples, stats = read_samples(tmp_path / "a")
    assert len(samples) == 4000 and stats["labeled_images"] == 100
    with pytest.raises(ValueError, match="has only 500 images"):
        resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / "d"), num_samples=10, unique_images=501))
    with pytest.raises(ValueError, match="needs --shards"):
        ResampleConfig(labeled=lab, out="x", num_samples=10, epochs=2)


def test_guard_rails(spark, tmp_path):
    head_only = [r for r in toy_rows() if not r["tail"]]
    lab = write_labeled(tmp_path / "lab", head_only)
    with pytest.raises(ValueError, match="tail split, which has no images"):
        resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / "s"), num_samples=100, alpha=0.7))
    resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / "s"), num_samples=100, alpha=1.0))  # fine
    for bad in (dict(num_samples=0), dict(num_samples=10, alpha=1.2), dict(num_samples=10, strategy="zipf")):
        with pytest.raises(ValueError):
            ResampleConfig(labeled=lab, out="x", **bad)


@pytest.mark.slow
def test_killed_job_leaves_no_complete_looking_output(tmp_path):
    lab = write_labeled(tmp_path / "lab", toy_rows(2000, 1000))
    out = tmp_path / "out"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    p = subprocess.Popen([str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
                          str(ROOT / "jobs" / "resample.py"), "--labeled", lab, "--out", str(out),
                          "--num-samples", "300000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(tmp_path.glob(".out.tmp-*")):
            time.sleep(0.2)
        assert list(tmp_path.glob(".out.tmp-*")), "the job never started writing"
        time.sleep(1.0)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert not out.exists()
