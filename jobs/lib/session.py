"""The SparkSession for a job, with the project's code and WordNet shipped to executors."""
from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

from pipeline.wordnet import PROJECT_ROOT, default_wordnet_dir

WORDNET_ARCHIVE = "wordnet_corpus"
# every package executor code imports (dedup: the dedup job's per-image work; trainer: the export
# loader of dedup --method embedding|rmac); tests/spark/test_session.py checks that the shipped packages
# import nothing else of the project
PACKAGES = ("pipeline", "jobs", "schemas", "trainer", "dedup")
_SHIPPED: dict[int, set] = {}  # SparkContext id -> the WordNet directory shipped to it

# Settings the jobs rely on, applied when neither spark-submit --conf nor `conf` sets them:
JOB_DEFAULTS = {
    # rows per Arrow batch of mapInArrow: the vocab and label jobs' per-image work is numpy/pyarrow
    # kernels whose per-call overhead a 64k-row batch amortises; memory per batch stays at tens
    # of MB (a batch holds 64k images' tag lists), whatever the partition size
    "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
    # adaptive execution (Spark's default since 3.2, pinned here): the shuffles left are partial
    # aggregates of a few thousand rows, which it coalesces into a few tasks
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    # one Python worker per executor core for the whole job (Spark's default, pinned): WordNet and
    # the broadcast tables are loaded once per worker, not once per task
    "spark.python.worker.reuse": "true",
}
# Where the image reader's libraries take credentials and endpoints (pipeline/image_reader.py):
# forwarded to executors as spark.executorEnv.* when the master is not local (local executors
# inherit the environment) and spark-submit did not set that variable itself.
STORAGE_ENV_PREFIXES = ("AWS_", "FSSPEC_", "AZURE_STORAGE_", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
# Spark's own redaction (spark.redaction.regex, the UI's environment page and event logs) with the
# storage variables' secret-bearing names added: AZURE_STORAGE_ACCOUNT_KEY, *_SAS_TOKEN, ...
REDACTION_REGEX = r"(?i)secret|password|token|access[._]?key|account[._]?key|credential|signature|sas"
SHUFFLE_BYTES_PER_PARTITION = 128 << 20  # input bytes per shuffle partition (tune_session)


def get_session(app: str, master: str | None = None, conf: dict | None = None):
    """SparkSession named `app`. `master` None keeps whatever spark-submit set (default local[*]).

    Ships a zip of the project's packages with addPyFile so executors on a real cluster import
    the same code as the driver; the Python dependencies themselves must exist on the cluster.
    With a local master and PYSPARK_PYTHON unset, the executors' Python is this interpreter (the
    project's environment) rather than whatever `python3` is first on PATH.
    """
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName(app)
    if master:
        b = b.master(master)
    elif not _master_from_submit():
        b = b.master("local[*]")
    if "PYSPARK_PYTHON" not in os.environ and (master or _effective_master()).startswith("local"):
        os.environ["PYSPARK_PYTHON"] = sys.executable  # read when the SparkContext starts
    submitted = _submitted_conf()
    defaults = {k: v for k, v in {**JOB_DEFAULTS, "spark.redaction.regex": REDACTION_REGEX}.items()
                if k not in submitted}
    if not (master or _effective_master()).startswith("local"):
        defaults.update({k: v for k, v in storage_env(os.environ).items() if k not in submitted})
    for k, v in {"spark.sql.session.timeZone": "UTC", **defaults, **(conf or {})}.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.sparkContext.addPyFile(str(code_zip()))
    return spark


def storage_env(environ) -> dict[str, str]:
    """spark.executorEnv.NAME -> value for each storage credential or endpoint variable in
    `environ` (STORAGE_ENV_PREFIXES)."""
    return {f"spark.executorEnv.{k}": v for k, v in sorted(environ.items()) if k.startswith(STORAGE_ENV_PREFIXES)}


def input_bytes(spark, path: str) -> int:
    """Bytes under `path` (a file or a directory, any Hadoop file system)."""
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return int(p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).getContentSummary(p).getLength())


def tune_session(spark, n_bytes: int) -> None:
    """Shuffle partitions from the input size (one per SHUFFLE_BYTES_PER_PARTITION, at least the
    default parallelism) unless the user chose a number: Spark's fixed default of 200 is far too
    many tasks for a small input and too few for a 100M-image one."""
    key = "spark.sql.shuffle.partitions"
    if spark.sparkContext.getConf().contains(key) or spark.conf.get(key) != "200":
        return
    n = max(spark.sparkContext.defaultParallelism, -(-n_bytes // SHUFFLE_BYTES_PER_PARTITION))
    spark.conf.set(key, str(min(n, 10_000)))


def _submitted_conf() -> set[str]:
    """Keys spark-submit already set in the JVM (empty without spark-submit)."""
    if not _master_from_submit():
        return set()
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return {k for k, _ in SparkConf().getAll()}


def ship_wordnet(spark, wordnet_dir: str | os.PathLike | None = None) -> None:
    """Make WordNet available to executors as a Spark archive (see `executor_wordnet_dir`)."""
    src = (Path(wordnet_dir) if wordnet_dir else default_wordnet_dir()).resolve()
    if not (src / "data.noun").is_file():
        raise FileNotFoundError(f"WordNet not found in {src}: run `make setup` or pass --wordnet")
    shipped = _SHIPPED.setdefault(id(spark.sparkContext), set())
    if shipped:
        if src not in shipped:
            raise ValueError(f"this SparkContext already ships WordNet from {next(iter(shipped))}, not {src}")
        return
    from pipeline.wordnet import zip_wordnet

    dst = Path(tempfile.mkdtemp(prefix="wordnet-")) / f"{WORDNET_ARCHIVE}.zip"
    zip_wordnet(src, dst)
    shipped.add(src)
    # unpacked on each executor as a directory named WORDNET_ARCHIVE (the URI fragment)
    spark.sparkContext.addArchive(f"{dst}#{WORDNET_ARCHIVE}")


def executor_wordnet_dir() -> Path:
    """Where the shipped WordNet archive was unpacked on this executor."""
    from pyspark import SparkFiles

    d = Path(SparkFiles.get(WORDNET_ARCHIVE))
    if not (d / "data.noun").is_file():
        raise FileNotFoundError(f"WordNet archive not unpacked at {d}: was ship_wordnet() called?")
    return d


def _master_from_submit() -> bool:
    # spark-submit starts the JVM first and hands the Python driver its gateway port; its
    # --master (default local[*]) is then already in the JVM's configuration.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _effective_master() -> str:
    """The master a session without an explicit one gets: spark-submit's --master, else local[*]."""
    if not _master_from_submit():
        return "local[*]"
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, whose conf holds --master
    return SparkConf().get("spark.master", "local[*]")


def code_zip() -> Path:
    """A zip of PACKAGES (sources and their data files; no caches, no hidden files) in a temp dir."""
    out = Path(tempfile.mkdtemp(prefix="hashtag-code-")) / "hashtag_pretrain_code.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for pkg in PACKAGES:
            for f in sorted((PROJECT_ROOT / pkg).rglob("*")):
                rel = f.relative_to(PROJECT_ROOT)
                if f.is_file() and f.suffix != ".pyc" and not any(
                        part == "__pycache__" or part.startswith(".") for part in rel.parts):
                    z.write(f, rel.as_posix())
    return out
