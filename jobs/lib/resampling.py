"""DataFrame transforms of the resample job: an exact, seeded two-level multinomial draw.

Draws are a pure function of (seed, data): rows are grouped into logical buckets by a hash of
image_id (not Spark partitions), bucket sums are exact integers, each bucket's draw uses a
generator seeded by (seed, split, bucket) over its rows sorted by image_id. Nothing per image
reaches the driver: only one integer per bucket.

Positions are numbered per bucket, with no sort: the driver's per-bucket sample counts give each
bucket a range of a bucket-major numbering (prefix sums over (split, bucket)), and a seeded
permutation of [0, M) (pipeline.sampling.shuffled_position) maps that numbering to positions,
so the draw, the shuffle and the numbering are one narrow step per bucket.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.lib.fault_injection import inject
from pipeline.sampling import (ALL, HEAD, TAIL, WEIGHT_SCALE, bucket_count, bucket_draws, multinomial, rng_for,
                               shuffled_position)

COPY = "_copy"  # 0 for an image's first sample in the draw, 1, 2, ... for its repeats
SAMPLES = "_samples"  # the Observation's count of all samples


def sampling_weights(labeled: DataFrame, strategy: str) -> DataFrame:
    """`labeled` (image_id, tail, importance or labels, any other columns) plus `split` and a
    float `weight` in (0, 1]; split is head/tail or all."""
    if strategy == "importance":
        w = labeled.withColumn("split", F.when(F.col("tail"), TAIL).otherwise(HEAD)).withColumn(
            "weight", F.col("importance"))
    else:
        occ = labeled.select("image_id", F.explode("labels").alias("label"))
        f = occ.groupBy("label").agg(F.count("*").cast("double").alias("f"))
        g = {"natural": F.lit(1.0), "sqrt": F.pow(F.col("f"), -0.5), "uniform": 1.0 / F.col("f")}[strategy]
        per_image = occ.join(f, "label").groupBy("image_id").agg(F.sum(g).alias("weight"))
        w = labeled.join(per_image, "image_id").withColumn("split", F.lit(ALL))
    top = w.agg(F.max("weight")).first()[0]
    if top is None or not top > 0:
        raise ValueError("no positive sampling weight: is the labeled table empty?")
    return w.withColumn("weight", F.col("weight") / F.lit(top))


def fixed_point_buckets(weights: DataFrame, n_buckets: int) -> DataFrame:
    """Adds `bucket` (hash of image_id) and `w` (int64 fixed-point weight, exact to sum)."""
    return (weights.withColumn("bucket", F.pmod(F.xxhash64(F.lit("bucket"), "image_id"), F.lit(n_buckets)))
            .withColumn("w", F.greatest(F.lit(1).cast("long"),
                                        F.round(F.col("weight") * F.lit(float(WEIGHT_SCALE))).cast("long"))))


def bucket_plan(buckets: DataFrame, split_sizes: dict[str, int], seed: int) -> list[tuple[str, int, int, int]]:
    """(split, bucket, samples, first number) of every bucket that draws: level one of the draw
    from the exact per-bucket weight sums (one row per bucket reaches the driver), and each
    bucket's range of the bucket-major numbering (splits in `split_sizes` order, buckets ascending)."""
    sums = (buckets.groupBy("split", "bucket").agg(F.sum(F.col("w").cast("decimal(38,0)")).alias("W"))
            .collect())
    per_split: dict[str, dict[int, int]] = {}
    for r in sums:
        per_split.setdefault(r["split"], {})[int(r["bucket"])] = int(r["W"])
    plan, first = [], 0
    for split, n in split_sizes.items():
        if n > 0 and not per_split.get(split):
            raise ValueError(f"{n} samples requested from the {split} split, which has no images "
                             f"(adjust --alpha or the label job's --tail-threshold)")
        draws = bucket_draws(n, per_split.get(split, {}), rng_for(seed, "buckets", split)) if n else {}
        for b in sorted(draws):
            if draws[b] > 0:
                plan.append((split, b, draws[b], first))
                first += draws[b]
    if not plan:
        raise ValueError("nothing to draw")
    return plan


def draw_samples(buckets: DataFrame, split_sizes: dict[str, int], seed: int,
                 payload: list[str]) -> tuple[DataFrame, Observation]:
    """(position, image_id, *payload, split, COPY): one row per sample, exactly split_sizes[split]
    per split, positions 0..M-1 each once; and an Observation of the unique images per split
    and of all samples (SAMPLES), filled by the first action on the samples.

    Within a bucket: its rows sorted by image_id, a multinomial of its samples over their
    fixed-point weights (a generator seeded by (seed, split, bucket)), the samples numbered in
    (image_id, copy) order from the bucket's first number, and each number mapped to its position
    by the seeded permutation of [0, M)."""
    plan = bucket_plan(buckets, split_sizes, seed)
    total = sum(n for _, _, n, _ in plan)
    ranges = {(split, bucket): (n, first) for split, bucket, n, first in plan}  # travels with the function
    fields = {f.name: f for f in buckets.schema.fields}
    out = T.StructType([T.StructField("position", T.LongType(), False), fields["image_id"],
                        *[fields[c] for c in payload], T.StructField("split", T.StringType(), False),
                        T.StructField(COPY, T.LongType(), False)])

    def draw(t: pa.Table) -> pa.Table:
        split, bucket = t["split"][0].as_py(), t["bucket"][0].as_py()
        n, first = ranges.get((split, bucket), (0, 0))  # (0, 0): a bucket that draws nothing
        t = t.sort_by("image_id")
        inject("resample.draw")  # test-only (jobs/lib/fault_injection.py)
        counts = multinomial(n, t["w"].to_numpy(), rng_for(seed, "rows", split, bucket))
        keep = np.flatnonzero(counts)
        rows = np.repeat(keep, counts[keep])
        starts = np.repeat(np.cumsum(counts[keep]) - counts[keep], counts[keep])
        take = pa.array(rows)
        return pa.table({"position": shuffled_position(first + np.arange(n, dtype=np.int64), total, seed),
                         "image_id": t["image_id"].take(take), **{c: t[c].take(take) for c in payload},
                         "split": pa.array([split] * n, pa.string()),
                         COPY: pa.array(np.arange(n, dtype=np.int64) - starts, pa.int64())})
    drawn = (buckets.select("image_id", *payload, "split", "bucket", "w")
             .groupBy("split", "bucket").applyInArrow(draw, out))
    unique = Observation(f"samples and unique images per split, seed {seed}")
    first_copy = (F.col(COPY) == 0).cast("long")
    drawn = drawn.observe(unique, F.count("*").alias(SAMPLES), *[
        F.sum(F.when(F.col("split") == s, first_copy).otherwise(0)).alias(s) for s in split_sizes])
    return drawn, unique


class WeightedDraws:
    """Draws of a weighted strategy (importance, natural, sqrt, uniform) over `labeled`: draw(seed)
    is exactly sum(split_sizes) samples, with replacement; stats() checks the first draw's
    counts, observed while it was written."""

    def __init__(self, labeled: DataFrame, strategy: str, split_sizes: dict[str, int], rows_per_bucket: int,
                 payload: list[str]):
        self.images = labeled.count()
        self.sizes, self.payload, self.first = split_sizes, payload, None
        self.buckets = fixed_point_buckets(sampling_weights(labeled, strategy),
                                           bucket_count(self.images, rows_per_bucket))

    def draw(self, seed: int) -> tuple[DataFrame, int]:
        """(position, image_id, *payload, split, COPY), positions 0..M-1 each once; and M."""
        drawn, unique = draw_samples(self.buckets, self.sizes, seed, self.payload)
        if self.first is None:  # the first draw is samples.parquet's: its counts are checked
            self.first = unique
        return drawn, sum(self.sizes.values())

    def stats(self) -> dict:
        observed, total = self.first.get, sum(self.sizes.values())
        if observed[SAMPLES] != total:
            raise AssertionError(f"drew {observed[SAMPLES]} samples, expected {total}")
        return {"samples": total, "splits": {
            s: {"samples": n, "unique_images": int(observed.get(s) or 0),
                "duplication_factor": (n / observed[s]) if observed.get(s) else None}
            for s, n in self.sizes.items()}}
