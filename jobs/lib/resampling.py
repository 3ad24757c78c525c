"""DataFrame transforms of the resample job: an exact, seeded two-level multinomial draw.

Draws are a pure function of (seed, data): rows are grouped into logical buckets by a hash of
image_id (not Spark partitions), bucket sums are exact integers, each bucket's draw uses a
generator seeded by (seed, split, bucket) over its rows sorted by image_id. Nothing per image
reaches the driver: only one integer per bucket.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.lib.fault_injection import inject
from jobs.lib.numbering import number_rows
from pipeline.sampling import ALL, HEAD, TAIL, WEIGHT_SCALE, bucket_draws, multinomial, rng_for

ROWS_PER_RANGE = 1_000_000  # rows per window partition when numbering positions


def sampling_weights(labeled: DataFrame, strategy: str) -> DataFrame:
    """(image_id, split, weight) with float weights in (0, 1]; split is head/tail or all."""
    if strategy == "importance":
        w = labeled.select("image_id", F.when(F.col("tail"), TAIL).otherwise(HEAD).alias("split"),
                           F.col("importance").alias("weight"))
    else:
        occ = labeled.select("image_id", F.explode("labels").alias("label"))
        f = occ.groupBy("label").agg(F.count("*").cast("double").alias("f"))
        g = {"natural": F.lit(1.0), "sqrt": F.pow(F.col("f"), -0.5), "uniform": 1.0 / F.col("f")}[strategy]
        w = (occ.join(f, "label").groupBy("image_id").agg(F.sum(g).alias("weight"))
             .select("image_id", F.lit(ALL).alias("split"), "weight"))
    top = w.agg(F.max("weight")).first()[0]
    if top is None or not top > 0:
        raise ValueError("no positive sampling weight: is the labeled table empty?")
    return w.withColumn("weight", F.col("weight") / F.lit(top))


def fixed_point_buckets(weights: DataFrame, n_buckets: int) -> DataFrame:
    """Adds `bucket` (hash of image_id) and `w` (int64 fixed-point weight, exact to sum)."""
    return (weights.withColumn("bucket", F.pmod(F.xxhash64(F.lit("bucket"), "image_id"), F.lit(n_buckets)))
            .withColumn("w", F.greatest(F.lit(1).cast("long"),
                                        F.round(F.col("weight") * F.lit(float(WEIGHT_SCALE))).cast("long"))))


def draw_counts(buckets: DataFrame, split_sizes: dict[str, int], seed: int) -> tuple[DataFrame, dict]:
    """(image_id, split, count>0) with sum(count) == split_sizes[split] exactly."""
    sums = (buckets.groupBy("split", "bucket").agg(F.sum(F.col("w").cast("decimal(38,0)")).alias("W"))
            .collect())
    per_split: dict[str, dict[int, int]] = {}
    for r in sums:
        per_split.setdefault(r["split"], {})[int(r["bucket"])] = int(r["W"])
    plan, rows = {}, []
    for split, n in split_sizes.items():
        if n > 0 and not per_split.get(split):
            raise ValueError(f"{n} samples requested from the {split} split, which has no images "
                             f"(adjust --alpha or the label job's --tail-threshold)")
        draws = bucket_draws(n, per_split.get(split, {}), rng_for(seed, "buckets", split)) if n else {}
        plan[split] = draws
        rows += [(split, b, c) for b, c in draws.items() if c > 0]
    spark = buckets.sparkSession
    quota = spark.createDataFrame(rows, "split string, bucket long, n long") if rows else None
    if quota is None:
        raise ValueError("nothing to draw")

    def draw(t: pa.Table) -> pa.Table:
        t = t.sort_by("image_id")
        split, bucket, n = t["split"][0].as_py(), t["bucket"][0].as_py(), t["n"][0].as_py()
        inject("resample.draw")  # test-only (jobs/lib/fault_injection.py)
        counts = multinomial(n, t["w"].to_numpy(), rng_for(seed, "rows", split, bucket))
        keep = np.flatnonzero(counts)
        return pa.table({"image_id": t["image_id"].take(keep), "split": pa.array([split] * len(keep)),
                         "count": pa.array(counts[keep], pa.int64())})
    drawn = (buckets.join(F.broadcast(quota), ["split", "bucket"]).select("image_id", "split", "bucket", "w", "n")
             .groupBy("split", "bucket").applyInArrow(draw, "image_id string, split string, count long"))
    return drawn, plan


def shuffled_positions(copies: DataFrame, total: int, seed: int) -> DataFrame:
    """Adds `position` 0..total-1: a seeded global shuffle (order by a hash of the copy)."""
    bits = max(0, math.ceil(math.log2(max(1, total / ROWS_PER_RANGE))))
    keyed = copies.withColumn("_key", F.xxhash64(F.lit(seed), F.lit("shuffle"), "image_id", "copy"))
    coarse = F.shiftrightunsigned(F.col("_key"), 64 - bits) if bits else F.lit(0).cast("long")
    return number_rows(keyed, ["_key", "image_id", "copy"], coarse, "position").drop("_key")
