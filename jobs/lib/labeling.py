"""DataFrame transforms of the label job: hashtags -> labels, importance factors, tail flags."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.label_noise import noisy_labels
from schemas import MANIFEST_ID

_U53 = float(1 << 53)


def hash_uniform(seed: int, *cols) -> F.Column:
    """A uniform in [0, 1) that is a pure function of (seed, cols): same on any executor/retry."""
    return F.xxhash64(F.lit(seed), *cols).bitwiseAND(F.lit((1 << 53) - 1)).cast("double") / F.lit(_U53)


def class_count_of_vocabulary(label_images: DataFrame, hashtag_map: DataFrame, vocab_dir: str) -> int:
    """C, the number of labels of a vocabulary (label, images) whose labels are exactly 0..C-1 and
    whose hashtag_map points only at them; a ValueError naming `vocab_dir` otherwise."""
    n, lo, hi, distinct = label_images.agg(F.count("*"), F.min("label"), F.max("label"),
                                           F.countDistinct("label")).first()
    dangling = hashtag_map.join(label_images, "label", "left_anti").count()
    if n == 0 or dangling or (lo, hi, distinct) != (0, n - 1, n):
        raise ValueError(f"{vocab_dir}: inconsistent vocabulary ({n} labels numbered {lo}..{hi}, "
                         f"{dangling} hashtag_map rows point at no label)")
    return n


def image_label_rows(image_hashtags: DataFrame, hashtag_map: DataFrame) -> DataFrame:
    """(image_id, label) for each normalized hashtag of each image (the vocab job's
    image_hashtags table) that maps to a label; repeats possible when two hashtags of an image
    share a label (importance_and_tail deduplicates)."""
    return (image_hashtags.select(MANIFEST_ID, F.explode("hashtags").alias("hashtag"))
            .join(hashtag_map, "hashtag").select(MANIFEST_ID, "label"))


def label_sets(rows: DataFrame) -> DataFrame:
    """(image_id, labels): the rows of image_label_rows grouped, labels deduplicated and sorted."""
    return rows.groupBy(MANIFEST_ID).agg(F.array_sort(F.collect_set("label")).alias("labels"))


def add_label_noise(img_labels: DataFrame, p: float, seed: int, marginal: np.ndarray) -> DataFrame:
    """Replace each label with probability p by one drawn from the marginal excluding itself."""
    occ = img_labels.select(MANIFEST_ID, F.posexplode("labels").alias("pos", "label"))
    occ = occ.select(MANIFEST_ID, "label", hash_uniform(seed, F.lit("replace"), F.col(MANIFEST_ID), "pos").alias("u1"),
                     hash_uniform(seed, F.lit("draw"), F.col(MANIFEST_ID), "pos").alias("u2"))

    def fn(batches):
        for b in batches:
            new = noisy_labels(b.column(1).to_numpy(), b.column(2).to_numpy(), b.column(3).to_numpy(), p, marginal)
            yield pa.RecordBatch.from_arrays([b.column(0), pa.array(new, pa.int32())], names=[MANIFEST_ID, "label"])
    noisy = occ.mapInArrow(fn, f"{MANIFEST_ID} string, label int")
    return noisy.groupBy(MANIFEST_ID).agg(F.array_sort(F.collect_set("label")).alias("labels"))


def importance_and_tail(rows: DataFrame, label_images: DataFrame, tail_threshold: int) -> DataFrame:
    """(image_id, labels, importance, tail) from (image_id, label) rows, with f(h) =
    label_images.images: one shuffle by image_id (the vocabulary side is broadcast)."""
    return (rows.join(F.broadcast(label_images), "label").groupBy(MANIFEST_ID)
            .agg(F.array_sort(F.collect_set("label")).alias("labels"), F.min("images").alias("min_f"))
            .withColumn("importance", F.pow(F.col("min_f").cast("double"), F.lit(-0.5)))
            .withColumn("tail", F.col("min_f") < F.lit(tail_threshold)).drop("min_f"))
