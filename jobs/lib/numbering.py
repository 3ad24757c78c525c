"""Dense row numbers 0..n-1 in a global order, without a single-partition window."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
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
