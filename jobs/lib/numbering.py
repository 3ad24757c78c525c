"""Global order without a single-partition window: dense row numbers, and files of exact ranges."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F


def number_rows(df: DataFrame, order: list[str], coarse: Column, out: str) -> DataFrame:
    """Adds `out` = the row's rank (from 0) in `order`.

    `coarse` must be non-decreasing along `order` (e.g. the top bits of the sort key, or
    position // 1M): rows are ranked within each coarse range and the ranges are offset by
    their exact sizes, which only needs one small collect (one row per range).
    """
    keyed = df.withColumn("_coarse", coarse)
    sizes = sorted((r["_coarse"], r["count"]) for r in keyed.groupBy("_coarse").count().collect())
    offsets, acc = [], 0
    for c, n in sizes:
        offsets.append((c, acc))
        acc += n
    off = df.sparkSession.createDataFrame(offsets, "_coarse long, _offset long")
    w = Window.partitionBy("_coarse").orderBy(*order)
    return (keyed.join(F.broadcast(off), "_coarse")
            .withColumn(out, F.col("_offset") + F.row_number().over(w) - 1)
            .drop("_coarse", "_offset"))


def partition_keys(spark: SparkSession, n: int) -> list[int]:
    """For k in 0..n-1, a long whose hash sends a row to partition k of `repartition(n, key)`
    (Spark's hash partitioning: pmod(murmur3(key, 42), n), which `F.hash` computes); found by
    Spark itself, so it holds for the Spark that runs the job."""
    found = dict(spark.range(0, 64 * n).select(F.pmod(F.hash("id"), F.lit(n)).alias("p"), "id")
                 .groupBy("p").agg(F.min("id")).collect())
    missing = [k for k in range(n) if k not in found]
    if missing:  # each of 64n keys misses a given partition with probability 1 - 1/n
        raise RuntimeError(f"no key found for partitions {missing[:5]} of {n}")
    return [int(found[k]) for k in range(n)]


def files_by_range(df: DataFrame, column: str, total: int, n_files: int,
                   order: tuple[str, ...] = ()) -> DataFrame:
    """`df` (its long `column` in [0, total): positions, each once, or stored-image numbers) in
    n_files partitions, partition k holding the values [k * per, (k + 1) * per) sorted by `column`
    (then by `order`; per = ceil(total / n_files)): written, the part files in name order hold the rows in `column`
    order. No sampling pass (as
    repartitionByRange would make over the whole input) and no global sort: the ranges are known."""
    per = -(-total // n_files)
    keys = partition_keys(df.sparkSession, n_files)
    key = F.element_at(F.array(*[F.lit(k).cast("long") for k in keys]), (F.floor(F.col(column) / F.lit(per)) + 1).cast("int"))
    return df.repartition(n_files, key).sortWithinPartitions(column, *order)
