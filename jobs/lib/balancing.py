"""DataFrame transforms of MetaCLIP balancing (Xu et al. 2023, `metaclip/metaclip1/indexing/
balance_sampling.py`; MetaCLIP 2): per epoch, a seeded subset of the labelled images, each at most once.

An entry is a vocabulary label and count(entry) = f(h), the images carrying it. Image i is kept
with probability p_i = 1 - prod_h (1 - min(1, T / f(h))) (pipeline.sampling.metaclip_keep_probabilities,
once per Arrow batch; f travels with the function, one number per label, instead of a join of the
(image, label) rows), namely when u_i < p_i, u_i a uniform made of a hash of (the epoch's seed,
image_id): the same draw whatever the partitioning, the input order or the master.

Positions as in jobs/lib/resampling.py: the driver gets one kept count per bucket (a hash of
image_id), each bucket numbers its kept images (sorted by image_id) from its prefix sum, and
pipeline.sampling.shuffled_position maps the numbers to positions 0..K-1: no sort, no copies.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.sampling import ALL, WEIGHT_SCALE, bucket_count, metaclip_keep_probabilities, shuffled_position

P_KEEP = "_p_keep"
_KEY = "_key"  # the counting pass' key: -1 - bucket for an image, the label for a kept image's label


class MetaclipDraws:
    """MetaCLIP balancing of `labeled` (image_id and `payload`, which holds labels) with cap T:
    draw(seed) is one epoch's kept subset, stats() what stats.json records of the draws made."""

    def __init__(self, labeled: DataFrame, cap: int, num_classes: int, rows_per_bucket: int, payload: list[str]):
        self.cap, self.payload, self.epochs = cap, payload, []
        self.label_images, self.images = label_images(labeled, num_classes)
        if self.images == 0:
            raise ValueError("no labelled image to balance: is the labeled table empty?")
        n_buckets = bucket_count(self.images, rows_per_bucket)
        self.table = (with_keep_probability(labeled.select("image_id", *payload), self.label_images, cap)
                      .withColumn("bucket", F.pmod(F.xxhash64(F.lit("bucket"), "image_id"), F.lit(n_buckets)))
                      .cache())  # read by every epoch's two passes

    def draw(self, seed: int) -> tuple[DataFrame, int]:
        """(position, image_id, *payload) of the images kept by the draw of `seed`, positions
        0..K-1 each once; and K."""
        keep = epoch_uniform(seed) < F.col(P_KEEP)
        kept_per_bucket, label_samples, expected = epoch_counts(self.table, keep, len(self.label_images))
        total = sum(kept_per_bucket.values())
        if total == 0:
            raise ValueError(f"MetaCLIP balancing with --cap {self.cap} kept none of {self.images} images "
                             f"(seed {seed}; about {expected:.2f} expected): raise --cap")
        self.epochs.append({"seed": seed, "samples": total, "expected_samples": expected,
                            "label_samples": label_samples.tolist()})
        return number_kept(self.table.filter(keep), kept_per_bucket, seed, self.payload), total

    def stats(self) -> dict:
        """stats.json's counts: the first draw's samples (each a unique image), and per epoch the
        kept and expected (sum p_i) samples and the samples per label, beside the images per label."""
        k = self.epochs[0]["samples"]
        return {"samples": k, "splits": {ALL: {"samples": k, "unique_images": k, "duplication_factor": 1.0}},
                "metaclip": {"cap": self.cap, "label_images": self.label_images.tolist(), "epochs": self.epochs}}


def label_images(labeled: DataFrame, num_classes: int) -> tuple[np.ndarray, int]:
    """(f, images): f[h] the images carrying label h (labels are distinct per image), and the
    number of images, in one pass; one row per label reaches the driver."""
    images = Observation("labelled images")
    rows = (labeled.observe(images, F.count("*").alias("n")).select(F.explode("labels").alias("label"))
            .groupBy("label").count().collect())
    f = np.zeros(num_classes, dtype=np.int64)
    for r in rows:
        f[r["label"]] = r["count"]
    return f, int(images.get["n"])


def with_keep_probability(df: DataFrame, label_images: np.ndarray, cap: int) -> DataFrame:
    """`df` (with labels) plus P_KEEP, each image's p_i, computed per Arrow batch."""
    out = T.StructType([*df.schema.fields, T.StructField(P_KEEP, T.DoubleType(), False)])

    def add(batches):
        for b in batches:
            labels = b.column(b.schema.get_field_index("labels"))
            p = metaclip_keep_probabilities(labels.offsets.to_numpy(), labels.values.to_numpy(), label_images, cap)
            yield pa.RecordBatch.from_arrays([*b.columns, pa.array(p, pa.float64())], [*b.schema.names, P_KEEP])
    return df.mapInArrow(add, out)


def epoch_uniform(seed: int):
    """u_i in [0, 1): the top 53 bits of a 64-bit hash of (seed, image_id), a function of these only."""
    h = F.xxhash64(F.lit(seed), F.lit("metaclip"), F.col("image_id"))
    return F.shiftrightunsigned(h, 11).cast("double") * F.lit(2.0 ** -53)


def epoch_counts(table: DataFrame, keep, num_classes: int) -> tuple[dict[int, int], np.ndarray, float]:
    """({bucket: kept images}, kept samples per label, sum of p_i) of one draw, in one pass: an
    image counts under key -1 - bucket, each label of a kept image under the label; partial sums
    per task, so at most (buckets + labels) rows per task cross the shuffle."""
    empty = F.array().cast("array<long>")
    keys = F.concat(F.array(-1 - F.col("bucket")), F.when(keep, F.col("labels").cast("array<long>")).otherwise(empty))
    fixed_p = F.round(F.col(P_KEEP) * F.lit(float(WEIGHT_SCALE))).cast("decimal(38,0)")  # exact sums, any order
    rows = (table.select(F.explode(keys).alias(_KEY), keep.cast("long").alias("_kept"), fixed_p.alias("_p"))
            .groupBy(_KEY).agg(F.count("*").alias("n"), F.sum("_kept").alias("kept"), F.sum("_p").alias("p"))
            .collect())
    kept, per_label, expected = {}, np.zeros(num_classes, dtype=np.int64), 0
    for r in rows:
        if r[_KEY] < 0:
            kept[-1 - r[_KEY]] = int(r["kept"])
            expected += int(r["p"])
        else:
            per_label[r[_KEY]] = r["n"]
    return kept, per_label, round(expected / WEIGHT_SCALE, 6)  # the fixed point is exact to ~1e-7 per 100 images


def number_kept(kept: DataFrame, kept_per_bucket: dict[int, int], seed: int, payload: list[str]) -> DataFrame:
    """(position, image_id, *payload): bucket b's kept images, sorted by image_id, take the numbers
    [first_b, first_b + k_b) of a bucket-major numbering, mapped to positions by the seeded
    permutation of [0, K)."""
    ranges, first = {}, 0
    for b in sorted(kept_per_bucket):
        ranges[b] = (kept_per_bucket[b], first)
        first += kept_per_bucket[b]
    total = first
    fields = {f.name: f for f in kept.schema.fields}
    out = T.StructType([T.StructField("position", T.LongType(), False), fields["image_id"],
                        *[fields[c] for c in payload]])

    def number(t: pa.Table) -> pa.Table:
        bucket = t["bucket"][0].as_py()
        n, start = ranges.get(bucket, (0, 0))
        if t.num_rows != n:  # the keep draw is a function of (seed, image_id, p_i): never, unless that broke
            raise RuntimeError(f"bucket {bucket} kept {t.num_rows} images when numbered, {n} when counted")
        t = t.sort_by("image_id")
        return pa.table({"position": shuffled_position(start + np.arange(n, dtype=np.int64), total, seed),
                         "image_id": t["image_id"], **{c: t[c] for c in payload}})
    return kept.select("image_id", *payload, "bucket").groupBy("bucket").applyInArrow(number, out)
