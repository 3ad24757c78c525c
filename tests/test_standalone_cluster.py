"""Jobs on a Spark standalone cluster on loopback (one master, two workers, separate JVMs, started
with Spark's own launcher): the vocabulary job gives the same vocabulary as local[2], and dedup
--method embedding runs on executors whose Python does not have the project."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest

from tests.test_dedup_units import drawing
from tests.test_vocab_job import ROWS, write_manifest

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


@pytest.fixture
def cluster(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # workers' Python path: Spark's own
           "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    port = free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(free_port())],
                              stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT, env=env)]
    url = f"spark://127.0.0.1:{port}"
    try:
        wait_for(lambda: "I have been elected leader" in (logs / "master.log").read_text(), 60, "master start")
        for i in range(2):
            procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--cores", "1", "--memory", "1g",
                 "--host", "127.0.0.1", "--webui-port", str(free_port()), "--work-dir", str(tmp_path / f"w{i}")],
                stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env))
        wait_for(lambda: (logs / "master.log").read_text().count("Registering worker") >= 2, 60, "workers")
        yield url, env
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_standalone_cluster_matches_local(cluster, tmp_path, spark):
    from jobs.vocab import VocabConfig, run

    url, env = cluster
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
    work = list((tmp_path / "w0").rglob("stderr")) + list((tmp_path / "w1").rglob("stderr"))
    assert work, "no executor ran on the standalone workers"


def test_embedding_dedup_on_executors_without_the_project(cluster, tmp_path, python_without_project):
    """Executors run `python_without_project` (tests/conftest.py: the project's dependencies, not the
    project) from the workers' directories under tmp_path, with no PYTHONPATH: `trainer`,
    `pipeline`, `jobs` and `schemas` can only come from the code zip the job ships
    (jobs/lib/session.py PACKAGES). Without `trainer` in it, the embedding method's executor code
    (trainer.export.load_model) fails to import and the job fails."""
    url, env = cluster
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
    logs = "".join(p.read_text() for w in ("w0", "w1") for p in (tmp_path / w).rglob("stderr"))
    assert logs, "no executor ran on the standalone workers"
