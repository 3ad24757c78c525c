"""Jobs on a Spark standalone cluster on loopback (one master, two workers on two loopback
addresses, separate JVMs, started with Spark's own launcher): the vocabulary job gives the same
vocabulary as local[2]; dedup --method embedding runs on executors whose Python does not have
the project; the shards job writes each shard once under speculation and survives an executor
killed mid-shard (issue 16, items 12 and 14)."""
import subprocess
import sys
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.standalone import SPARK_HOME, Worker, executor_logs, standalone_cluster, wait_for
from tests.helpers import ROOT
from tests.helpers.images import drawing
from tests.helpers.jobkit import ROWS, write_labeled_images, write_manifest


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, environment, workers' work dirs): one master, two one-core workers on two
    loopback addresses (distinct hosts, so Spark may place a speculative copy on the other)."""
    with standalone_cluster(tmp_path_factory.mktemp("cluster"),
                            [Worker("127.0.0.1"), Worker("127.0.0.2")]) as c:
        yield c.url, c.env, c.work


@pytest.mark.slow  # minutes on 2 cores: `make test-all`
def test_standalone_cluster_matches_local(cluster, tmp_path, spark):
    from jobs.vocab import VocabConfig, run

    url, env, work = cluster
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    run(spark, VocabConfig(manifest=m, out=str(tmp_path / "local"), min_count=1))
    r = subprocess.run([str(SPARK_HOME / "bin" / "spark-submit"), "--master", url, "--conf", "spark.ui.enabled=false",
                        str(ROOT / "jobs" / "vocab.py"), "--manifest", m, "--out", str(tmp_path / "cluster"),
                        "--min-count", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for table in ("vocab.parquet", "hashtag_map.parquet"):
        a = pq.read_table(tmp_path / "local" / table).to_pylist()
        b = pq.read_table(tmp_path / "cluster" / table).to_pylist()
        assert a == b and a
    # the executors really were the workers' JVMs, which found WordNet in the shipped archive
    assert list(work[0].rglob("stderr")) + list(work[1].rglob("stderr")), "no executor ran on the standalone workers"


@pytest.mark.slow  # minutes on 2 cores: `make test-all`
def test_embedding_dedup_on_executors_without_the_project(cluster, tmp_path, python_without_project):
    """Executors run `python_without_project` (tests/conftest.py: the project's dependencies, not the
    project) from the workers' directories outside the checkout, with no PYTHONPATH: `trainer`,
    `pipeline`, `jobs` and `schemas` can only come from the code zip the job ships
    (jobs/lib/session.py PACKAGES). Without `trainer` in it, the embedding method's executor code
    (trainer.export.load_model) fails to import and the job fails."""
    url, env, work = cluster
    probe = subprocess.run([str(python_without_project), "-c", "import trainer"], cwd=tmp_path,
                           env={**env, "PYTHONPATH": ""}, capture_output=True, text=True)
    assert probe.returncode != 0, "the executors' Python must not see the project"
    (tmp_path / "eval").mkdir()
    for i in range(3):
        drawing(10 + i).save(tmp_path / "eval" / f"e{i}.png")
    pre = {f"copy{i}": tmp_path / "eval" / f"e{i}.png" for i in range(2)}  # byte-identical copies
    for i in range(4):
        drawing(50 + i).save(tmp_path / f"other{i}.png")
        pre[f"other{i}"] = tmp_path / f"other{i}.png"
    pq.write_table(pa.table({"image_id": list(pre), "image": [str(p) for p in pre.values()],
                             "hashtags": [["tag"]] * len(pre)}), tmp_path / "m.parquet")
    r = subprocess.run([str(SPARK_HOME / "bin" / "spark-submit"), "--master", url, "--conf", "spark.ui.enabled=false",
                        str(ROOT / "jobs" / "dedup.py"), "--manifest", str(tmp_path / "m.parquet"),
                        "--eval", str(tmp_path / "eval"), "--out", str(tmp_path / "dedup"), "--method", "embedding",
                        "--model", "random:regnety_002", "--img-size", "64", "--crop-steps", "0"],
                       env={**env, "PYSPARK_PYTHON": str(python_without_project),
                            "PYSPARK_DRIVER_PYTHON": sys.executable},
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    dups = pq.read_table(tmp_path / "dedup" / "duplicates.parquet").to_pylist()
    found = {(d["pretrain_id"], d["eval_id"]) for d in dups}
    assert {("copy0", "e0.png"), ("copy1", "e1.png")} <= found
    kept = pq.read_table(tmp_path / "dedup" / "manifest.parquet").column("image_id").to_pylist()
    assert sorted(kept) == sorted(set(pre) - {p for p, _ in found})
    assert executor_logs(work), "no executor ran on the standalone workers"


def png_images(d: Path, n: int) -> dict:
    import numpy as np
    from PIL import Image

    d.mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(d / f"{i}.png")
        images[f"im{i:03d}"] = (str(d / f"{i}.png"), None)
    return images


def shards_on_cluster(url, env, labeled: Path, out: Path, faults: Path, fault: str, conf: dict):
    """spark-submit jobs/shards.py on the cluster with a test fault; returns (Popen, log path)."""
    args = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", url, "--conf", "spark.ui.enabled=false",
            "--conf", "spark.sql.shuffle.partitions=4", "--conf", "spark.sql.adaptive.coalescePartitions.enabled=false"]
    # executors get their environment from the worker and spark.executorEnv.*, not from the driver
    for k, v in {**conf, "spark.executorEnv.HASHTAG_TEST_FAULTS": fault,
                 "spark.executorEnv.HASHTAG_TEST_FAULTS_LOG": str(faults)}.items():
        args += ["--conf", f"{k}={v}"]
    log = out.parent / f"{out.name}.log"
    p = subprocess.Popen([*args, str(ROOT / "jobs" / "shards.py"), "--labeled", str(labeled), "--out", str(out),
                          "--shard-size", "5", "--max-side", "32"],
                         env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return p, log


def check_exactly_the_clean_shards(out: Path, clean: Path) -> None:
    """Every tar once, as shards.json lists it (sha256 of the file), the same as a clean run, and
    nothing else: no temporary or partial tar of a killed or losing task attempt."""
    from pipeline.wds import file_sha256
    from schemas.shard_set import read_shard_set_meta

    index = read_shard_set_meta(out).to_dict()
    assert index == read_shard_set_meta(clean).to_dict()
    tars = sorted(p.name for p in out.iterdir() if p.suffix == ".tar" or ".tar." in p.name)
    assert tars == sorted(s["name"] for s in index["shards"])
    assert all(file_sha256(out / s["name"]) == s["sha256"] for s in index["shards"])
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]
    assert (out / "_SUCCESS").exists()


def test_speculative_copies_write_each_shard_once(cluster, tmp_path, spark):
    """Shard 1's first attempt stalls mid-tar (jobs/lib/fault_injection.py) and never ends, so the job can
    only finish through a speculative copy on the other worker (another loopback host)."""
    from jobs.shards import ShardsConfig, run as shards

    url, env, _ = cluster
    write_labeled_images(tmp_path / "labeled", png_images(tmp_path / "img", 40))
    shards(spark, ShardsConfig(labeled=str(tmp_path / "labeled"), out=str(tmp_path / "clean"), shard_size=5,
                               max_side=32))
    out, faults = tmp_path / "out", tmp_path / "faults"
    p, log = shards_on_cluster(url, env, tmp_path / "labeled", out, faults, "stall_first_attempt:shards.write:1",
                               {"spark.speculation": "true", "spark.speculation.interval": "200ms",
                                "spark.speculation.quantile": "0.5", "spark.speculation.multiplier": "2",
                                "spark.speculation.minTaskRuntime": "5s"})  # only the stalled attempt: a busy
                                # machine can take over 1 s to bring a task to its mid-tar point
    try:
        assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        p.kill()
    assert (faults / "shards.write-1-attempt0").exists()  # the stalled first attempt really ran
    check_exactly_the_clean_shards(out, tmp_path / "clean")


def test_executor_killed_mid_shard_then_rerun(cluster, tmp_path, spark):
    """The executor writing shard 1 is killed (SIGKILL, its Python workers too) while the tar is
    half-written: the task is rerun elsewhere, no partial tar is left, a rerun skips every shard."""
    from jobs.shards import ShardsConfig, run as shards

    url, env, _ = cluster
    write_labeled_images(tmp_path / "labeled", png_images(tmp_path / "img", 40))
    cfg = dict(labeled=str(tmp_path / "labeled"), shard_size=5, max_side=32)
    shards(spark, ShardsConfig(out=str(tmp_path / "clean"), **cfg))
    out, faults = tmp_path / "out", tmp_path / "faults"
    p, log = shards_on_cluster(url, env, tmp_path / "labeled", out, faults, "stall_first_attempt:shards.write:1", {})
    try:
        marker = faults / "shards.write-1-attempt0"
        wait_for(lambda: marker.exists() and marker.read_text(), 240, f"shard 1 never started: {log}")
        worker = psutil.Process(int(marker.read_text()))
        executor = next(a for a in worker.parents() if "CoarseGrainedExecutorBackend" in " ".join(a.cmdline()))
        assert [q.name for q in out.glob(".shard-000001.tar.*.tmp")], "no half-written tar at the kill"
        for q in [*executor.children(recursive=True), executor]:
            q.kill()
        assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        p.kill()
    check_exactly_the_clean_shards(out, tmp_path / "clean")
    again = shards(spark, ShardsConfig(out=str(out), **cfg))
    assert again["shards_written"] == 0 and again["shards_skipped"] == again["shards"]
    check_exactly_the_clean_shards(out, tmp_path / "clean")
