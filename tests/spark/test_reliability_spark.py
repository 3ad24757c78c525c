"""Reliability of the Spark jobs (issue 16): one caption-hashtag rule in Spark and Python, killed
drivers and their leftovers, retried tasks, manifests whose part files disagree on types, a
Python worker out of memory, reruns into a used output."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from jobs.label import LabelConfig, run as label
from jobs.lib.manifest import ManifestError
from jobs.lib.output import atomic_output, clean_leftovers
from jobs.resample import ResampleConfig, run as resample
from jobs.vocab import VocabConfig, run as vocab
from pipeline.atomic import atomic_dir
from pipeline.normalize import caption_hashtags, normalize
from schemas.sample_index import index_file
from tests.helpers import ROOT
from tests.helpers.jobkit import (ACUTE, ROWS, TRICKY_CAPTIONS, ZWJ, content, fake_shard_set, toy_rows, write_labeled,
                                  write_manifest)
from tests.helpers.launch import project_env

SPARK_SUBMIT = str(Path(sys.executable).parent / "spark-submit")
WITH_CAPTION = schemas.MANIFEST.append(pa.field("caption", pa.string()))


def subprocess_env(**extra) -> dict:
    return project_env(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, **extra)


# --- one caption-hashtag rule (the bug) and item 10 -------------------------------------------

def caption_rows() -> list[dict]:
    rows = [{"image_id": f"c{k:02d}", "image": f"c{k}.jpg", "hashtags": None, "caption": c}
            for k, c in enumerate(TRICKY_CAPTIONS)]
    rows.append({"image_id": "both", "image": "both.jpg", "caption": "#Dog and #cafe" + ACUTE,
                 "hashtags": [f"Ice{ZWJ}Cream", "CAFE" + ACUTE, "\U0001F468" + ZWJ + "\U0001F469", "", "#dog"]})
    rows.append({"image_id": "none", "image": "none.jpg", "hashtags": [], "caption": None})
    rows.append({"image_id": "big", "image": "big.jpg",  # one row with 10,000 tags in each column
                 "hashtags": [f"Tag {i}" for i in range(10_000)],
                 "caption": " ".join(f"#t{i}{ACUTE if i % 2 else ''}" for i in range(10_000))})
    return rows


def expected_tags(rows: list[dict]) -> tuple[set, dict]:
    """Plain Python with the function production calls: (raw strings, image -> normalized hashtags)."""
    raws, per_image = set(), {}
    for r in rows:
        tags = [t for t in r["hashtags"] or [] if t] + caption_hashtags(r["caption"])
        if tags:
            raws |= set(tags)
            per_image[r["image_id"]] = sorted({normalize(t) for t in tags} - {""})
    return raws, per_image


def test_caption_hashtags_in_spark_equal_python_and_are_deterministic(spark, tmp_path):
    rows = caption_rows()
    m = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=WITH_CAPTION), m)
    parts = tmp_path / "parts.parquet"  # the same rows, reversed, in three part files
    parts.mkdir()
    rev = pa.Table.from_pylist(rows[::-1], schema=WITH_CAPTION)
    for i, off in enumerate(range(0, rev.num_rows, 6)):
        pq.write_table(rev.slice(off, 6), parts / f"part-{i}.parquet")
    raws, per_image = expected_tags(rows)
    assert "dog" in per_image["c00"] and per_image["c01"] == per_image["c02"] == ["caf"]
    outputs = []
    for manifest, out in ((m, tmp_path / "a"), (parts, tmp_path / "b")):
        stats = vocab(spark, VocabConfig(manifest=str(manifest), out=str(out), min_count=2))
        raw_map = pq.read_table(out / "raw_map.parquet").to_pylist()
        assert {r["raw"] for r in raw_map} == raws  # Spark extracted exactly Python's raw tags
        assert all(r["hashtag"] == normalize(r["raw"]) for r in raw_map)
        got = {r["image_id"]: r["hashtags"] for r in pq.read_table(out / "image_hashtags.parquet").to_pylist()}
        assert got == per_image
        assert all(normalize(h) == h for tags in got.values() for h in tags)  # idempotent
        assert stats["rows_dropped"]["no_hashtags"] == len(rows) - len(per_image)
        outputs.append((sorted(map(str, raw_map)), got, pq.read_table(out / "vocab.parquet").to_pylist()))
    assert outputs[0] == outputs[1]  # another partitioning and order: the same outputs


# --- 13: leftovers of killed runs -------------------------------------------------------------

def test_atomic_output_removes_leftovers_and_restores_a_run_killed_between_renames(spark, tmp_path):
    out = tmp_path / "out"
    with atomic_output(spark, str(out)) as tmp:
        spark.range(3).write.parquet(f"{tmp}/t.parquet")
    # what a run killed half-way left, and one killed between its two renames (out moved aside)
    (tmp_path / ".out.tmp-0123456789ab" / "t.parquet").mkdir(parents=True)
    (tmp_path / ".out.tmp-0123456789ab" / "t.parquet" / "part-0").write_text("partial")
    out.rename(tmp_path / ".out.old-ba9876543210")
    (tmp_path / ".out.tmp-ba9876543210").mkdir()
    (tmp_path / ".out.v2.tmp-0123456789ab").mkdir()  # another output's (out.v2): not touched
    removed = clean_leftovers(spark, str(out))
    assert sorted(Path(p.removeprefix("file:")).name for p in removed) == [".out.tmp-0123456789ab",
                                                                          ".out.tmp-ba9876543210"]
    assert sorted(r["id"] for r in spark.read.parquet(str(out / "t.parquet")).collect()) == [0, 1, 2]  # restored
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.v2.tmp-0123456789ab", "out"]
    (tmp_path / ".out.tmp-fedcba987654").mkdir()
    with atomic_output(spark, str(out)) as tmp:  # a run cleans up before it starts
        assert not (tmp_path / ".out.tmp-fedcba987654").exists()
        spark.range(5).write.parquet(f"{tmp}/t.parquet")
    assert spark.read.parquet(str(out / "t.parquet")).count() == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.v2.tmp-0123456789ab", "out"]


def test_atomic_dir_killed_writer_is_cleaned_up_by_the_next(tmp_path):
    out = tmp_path / "card"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("1")
    ready = tmp_path / "ready"
    code = ("import sys, time; from pathlib import Path; from pipeline.atomic import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n"
            "    (tmp / 'v').write_text('2'); Path(sys.argv[2]).touch(); time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(out), str(ready)], cwd=ROOT, env=subprocess_env())
    try:
        deadline = time.time() + 60
        while not ready.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert ready.exists(), "the writer never got inside atomic_dir"
    finally:
        p.kill()
        p.wait()
    left = [q.name for q in tmp_path.iterdir() if q.name.startswith(".card.")]
    assert len(left) == 1 and left[0].endswith(".tmp") and (out / "v").read_text() == "1"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("3")
    assert (out / "v").read_text() == "3"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["card", "ready"]


def many_rows(n: int) -> dict:
    nouns = ["dog", "cat", "apple", "car", "boat", "tree", "horse", "banana", "truck", "chair"]
    return {f"i{k:06d}": [nouns[k % 10], nouns[(k * 7 + 3) % 10], f"tag{k % 997}"] for k in range(n)}


def test_driver_killed_before_commit_then_the_next_run_completes(spark, tmp_path):
    m = write_manifest(tmp_path / "m.parquet", many_rows(3_000))
    out = tmp_path / "out"
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "jobs.vocab", "--manifest", m, "--out", str(out), "--min-count", "1",
                              "--master", "local[1]"], cwd=ROOT, env=subprocess_env(), stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:  # kill once the first table is in the temporary output: well before the job can commit
        deadline = time.time() + 240
        while (not list(tmp_path.glob(".out.tmp-*/image_hashtags.parquet/_SUCCESS")) and p.poll() is None
               and time.time() < deadline):
            time.sleep(0.02)
        running = p.poll() is None
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert running, f"the job ended before it could be killed:\n{log.read_text()[-3000:]}"
    assert not out.exists() and not list(tmp_path.glob("out/**/_SUCCESS"))
    left = list(tmp_path.glob(".out.tmp-*"))
    assert len(left) == 1 and (left[0] / "image_hashtags.parquet" / "_SUCCESS").exists()
    stats = vocab(spark, VocabConfig(manifest=m, out=str(out), min_count=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.log", "m.parquet", "out"]  # leftovers gone
    for table in ("vocab", "hashtag_map", "image_hashtags", "raw_map"):
        assert (out / f"{table}.parquet" / "_SUCCESS").exists()
    assert json.loads((out / "stats.json").read_text())["rows_kept"] == stats["rows_kept"] == 3_000
    assert pq.read_table(out / "image_hashtags.parquet").num_rows == 3_000


# --- 11: retried tasks ------------------------------------------------------------------------

def test_resample_with_failed_first_attempts_equals_the_run_without(spark, tmp_path):
    lab = write_labeled(tmp_path / "lab", toy_rows(300, 200, seed=2), files=3)
    args = dict(num_samples=5000, seed=11, rows_per_bucket=50)
    resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / "a"), **args))
    faults = tmp_path / "faults"
    # several draw tasks: 4 shuffle partitions, not coalesced into one by adaptive execution
    r = subprocess.run([SPARK_SUBMIT, "--master", "local[2,3]", "--conf", "spark.ui.enabled=false",
                        "--conf", "spark.sql.shuffle.partitions=4",
                        "--conf", "spark.sql.adaptive.coalescePartitions.enabled=false",
                        str(ROOT / "jobs" / "resample.py"), "--labeled", lab, "--out", str(tmp_path / "b"),
                        "--num-samples", "5000", "--seed", "11", "--rows-per-bucket", "50"],
                       env=subprocess_env(HASHTAG_TEST_FAULTS="fail_first_attempt:resample.draw",
                                          HASHTAG_TEST_FAULTS_LOG=str(faults)),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    failed = sorted(p.name for p in faults.iterdir())
    assert len(failed) >= 2 and all(n.endswith("-attempt0") for n in failed)  # every draw task failed once
    assert "injected test fault" in r.stderr  # ... and Spark retried it
    assert content(tmp_path / "a") == content(tmp_path / "b")
    stats = [json.loads((tmp_path / d / "stats.json").read_text()) for d in "ab"]
    assert stats[0]["splits"] == stats[1]["splits"]


# --- 9: part files that disagree on a column's type -------------------------------------------

def test_part_files_that_disagree_on_a_type_name_the_file_and_column(spark, tmp_path):
    good = pa.table({"image_id": ["a", "b"], "image": ["a.jpg", "b.jpg"], "hashtags": [["dog"], ["cat"]]})
    cases = {
        "hashtags": (pa.table({"image_id": ["c"], "image": ["c.jpg"], "hashtags": ["dog"]}), "string", "array<string>"),
        "image_id": (pa.table({"image_id": [7], "image": ["c.jpg"], "hashtags": [["dog"]]}), "bigint", "string"),
    }
    for col, (bad, bad_type, good_type) in cases.items():
        d = tmp_path / f"{col}.parquet"
        d.mkdir()
        pq.write_table(good, d / "part-00000.parquet")
        pq.write_table(good, d / "part-00001.parquet")
        pq.write_table(bad, d / "part-00002.parquet")
        with pytest.raises(ManifestError, match=rf"{col}\.parquet: column '{col}' is {bad_type} in part file "
                                                rf"\S*part-00002\.parquet but {good_type} in \S*part-00000\.parquet"):
            vocab(spark, VocabConfig(manifest=str(d), out=str(tmp_path / f"out_{col}"), min_count=1))
        assert not (tmp_path / f"out_{col}").exists()


# --- 17: a Python worker out of memory --------------------------------------------------------

def test_python_worker_out_of_memory_fails_naming_stage_and_partition(tmp_path):
    rows = [{"image_id": f"i{k}", "image": f"{k}.jpg", "hashtags": ["dog"], "caption": "a #cat"} for k in range(50)]
    # 240 MB of caption: its hashtags need several GB; every other row fits (checked by hand) in the
    # 2 GB of address space a Python worker gets (RLIMIT_AS; numpy, pyarrow and nltk reserve ~1 GB)
    rows.append({"image_id": "huge", "image": "huge.jpg", "hashtags": ["dog"], "caption": "#ab " * 60_000_000})
    m = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=WITH_CAPTION), m)
    out = tmp_path / "out"
    # The JVM holds the 240 MB string several times over (Parquet, rows, the Arrow batch): with a 2 GB
    # heap it ran out itself about one run in 20 (CI, 2026-12-06: SparkContext shut down, no JobFailed)
    r = subprocess.run([SPARK_SUBMIT, "--master", "local[1]", "--driver-memory", "4g",
                        "--conf", "spark.executor.pyspark.memory=2g", "--conf", "spark.ui.enabled=false",
                        str(ROOT / "jobs" / "vocab.py"), "--manifest", str(m), "--out", str(out)],
                       env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    # spark-submit passes the Python driver's stderr (its traceback) to its stdout
    failure = next((ln for ln in r.stdout.splitlines() if ln.startswith("jobs.lib.errors.JobFailed")), "")
    assert re.match(r"jobs\.lib\.errors\.JobFailed: vocab: Spark stage \d+ \(attempt \d+\) failed in partition \d+ "
                    r"\(task attempt \d+, TID \d+\): .*MemoryError.*ran out of memory", failure), \
        r.stdout[-3000:]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]


# --- 15: reruns into a used output replace it whole -------------------------------------------

def part_files_job_ids(table_dir: Path) -> set[str]:
    """The write-job ids in a Spark-written table's part file names (part-N-<job uuid>-c000...)."""
    return {re.match(r"part-\d+-([0-9a-f-]{36})", p.name).group(1) for p in table_dir.glob("part-*")}


def test_reruns_of_label_and_resample_replace_their_output_whole(spark, tmp_path):
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab"), min_count=1))
    lab = tmp_path / "lab"
    label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "vocab"), out=str(lab), tail_threshold=4))
    first = part_files_job_ids(lab / "labeled.parquet")
    label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "vocab"), out=str(lab), tail_threshold=1,
                             label_noise=0.5, seed=3))
    again = part_files_job_ids(lab / "labeled.parquet")
    assert len(first) == len(again) == 1 and first != again  # only the second run's part files
    stats = json.loads((lab / "stats.json").read_text())
    assert stats["config"]["label_noise"] == 0.5 and stats["tail_images"] == 0  # the second run's
    # resample: a run bound to shards writes index/; a rerun without --shards leaves none behind
    rows = toy_rows(60, 40, seed=4)
    labeled = write_labeled(tmp_path / "toy", rows)
    shards = fake_shard_set(tmp_path / "shards", [r["image_id"] for r in rows], shard_size=8)
    out = tmp_path / "s"
    resample(spark, ResampleConfig(labeled=labeled, out=str(out), num_samples=3000, seed=5, shards=str(shards),
                                   epochs=2))
    assert index_file(out).exists()
    resample(spark, ResampleConfig(labeled=labeled, out=str(out), num_samples=1000, seed=6))
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".crc")) == ["samples.parquet", "stats.json"]
    assert len(content(out)) == 1000 and json.loads((out / "stats.json").read_text())["config"]["seed"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab", "m.parquet", "s", "shards", "toy", "vocab"]
