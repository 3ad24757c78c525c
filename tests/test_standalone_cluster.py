"""The vocabulary job on a Spark standalone cluster on loopback (one master, two workers, separate
JVMs, started with Spark's own launcher) gives the same vocabulary as local[2]."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pyspark
import pytest

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
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}
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
