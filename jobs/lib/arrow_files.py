"""A Parquet table the job itself wrote, read back file by file by pyarrow inside the tasks.

Spark's own route into a Python function (`spark.read.parquet(...).mapInArrow(fn)`) decodes the
Parquet into JVM rows and converts them to Arrow again; for the vocab job's counting passes over
its own per-image table that conversion cost more CPU than the counting. Here each task reads one
part file with pyarrow (local, or through fsspec for the object stores the image reader knows)
and hands its record batches straight to `fn`: Arrow from the file to the kernel, no JVM rows.
A table on another file system (hdfs://, viewfs://) takes Spark's route, with the same `fn`.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from pyspark.sql import DataFrame, SparkSession

from jobs.lib.output import part_files
from pipeline.image_reader import REMOTE, open_input


def data_files(spark: SparkSession, path: str) -> list[str]:
    """The Parquet part files of a Spark-written table, as URIs, sorted (jobs/lib/output.part_files)."""
    return part_files(spark, path, ".parquet")


def readable_in_tasks(uri: str) -> bool:
    """Whether a task's pyarrow can open `uri` without Hadoop: local files and the REMOTE schemes."""
    return urlsplit(uri).scheme.lower() in ("", "file", *REMOTE)


def _local(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.path if parts.scheme.lower() == "file" else uri


def map_parquet_files(spark: SparkSession, path: str, columns: list[str], fn, schema: str) -> DataFrame:
    """`fn(record batches of columns)` -> record batches of `schema`, over every part file of the
    Parquet table at `path` (one task per file); equal to
    `spark.read.parquet(path).select(*columns).mapInArrow(fn, schema)` but for batch boundaries,
    which `fn` must not depend on (per-partition partial aggregates do not)."""
    files = data_files(spark, path)
    if not files or not all(readable_in_tasks(f) for f in files):
        return spark.read.parquet(path).select(*columns).mapInArrow(fn, schema)

    def per_file(batches):
        import pyarrow.parquet as pq

        for b in batches:
            for uri in b.column(0).to_pylist():
                with open_input(_local(uri)) as f:
                    yield from fn(pq.ParquetFile(f).iter_batches(columns=columns))
    listing = spark.sparkContext.parallelize([(f,) for f in files], len(files))
    return spark.createDataFrame(listing, "file string").mapInArrow(per_file, schema)
