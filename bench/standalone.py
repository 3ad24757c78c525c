"""A Spark standalone cluster on loopback: one master and N workers, each a JVM started with
spark-class from pyspark's own Spark. Used by tests/cluster/ and bench/rehearsal.py, so the test
and the bench start and stop the cluster the same way.

    with standalone_cluster(base, [Worker("127.0.0.1", cores=2, memory="4g")]) as cluster:
        subprocess.run([cluster.spark_submit, "--master", cluster.url, ...], env=cluster.env)
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent


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


@dataclass(frozen=True)
class Worker:
    host: str = "127.0.0.1"  # distinct loopback hosts let Spark place a speculative copy on another
    cores: int = 1
    memory: str = "1g"


@dataclass
class Cluster:
    url: str                      # spark://127.0.0.1:PORT
    env: dict[str, str]           # the environment spark-submit should run with
    work: list[Path]              # each worker's work dir (executors' stderr under app-*/N/)
    logs: Path
    procs: list[subprocess.Popen] = field(default_factory=list)  # master first, then the workers

    @property
    def spark_submit(self) -> str:
        return str(SPARK_HOME / "bin" / "spark-submit")

    @property
    def master_pid(self) -> int:
        return self.procs[0].pid

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs[1:]]


def cluster_env(python: str = sys.executable) -> dict[str, str]:
    """The environment without PYTHONPATH (the workers' Python path is Spark's own; the jobs ship
    the project as a zip), Spark's home, loopback, and `python` for the executors."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": python}


@contextlib.contextmanager
def standalone_cluster(base: str | os.PathLike, workers: list[Worker], timeout: float = 60,
                       env: dict[str, str] | None = None):
    """A master and `workers` under `base` (logs/, w0/, w1/, ...); yields a Cluster once every
    worker has registered, and terminates them all (workers first) on exit."""
    base = Path(base)
    env = cluster_env() if env is None else env
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = free_port()
    master_log = logs / "master.log"
    # spark-class execs java, so each Popen's pid is its JVM's (the executors are its children)
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(free_port())],
                              stdout=open(master_log, "w"), stderr=subprocess.STDOUT, env=env)]
    url = f"spark://127.0.0.1:{port}"
    work = [base / f"w{i}" for i in range(len(workers))]
    try:
        wait_for(lambda: "I have been elected leader" in master_log.read_text(), timeout, "master start")
        for i, w in enumerate(workers):
            procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--cores", str(w.cores),
                 "--memory", w.memory, "--host", w.host, "--webui-port", str(free_port()), "--work-dir", str(work[i])],
                stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT,
                env={**env, "SPARK_LOCAL_IP": w.host}))
        wait_for(lambda: master_log.read_text().count("Registering worker") >= len(workers), timeout, "workers")
        yield Cluster(url, env, work, logs, procs)
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def executor_logs(work: list[Path]) -> str:
    """The executors' stderr on the workers."""
    return "".join(p.read_text(errors="replace") for w in work for p in w.rglob("stderr"))
