"""DataFrame transforms of the label job: hashtags -> labels, importance factors, tail flags.

One narrow pass over the cleaned manifest: each partition maps its raw tags through a broadcast
table raw -> label (the vocab job's raw_map joined to hashtag_map, one row per distinct raw
string), deduplicates and sorts labels per image and takes the smallest f(h), with pyarrow and
numpy per Arrow batch (pipeline/tag_arrays.py). No shuffle, no group-by on image_id.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.lib.manifest import TAGS
from pipeline.label_noise import noisy_labels
from pipeline.tag_arrays import codes_per_row, dedupe_sorted, flat_with_rows, list_array
from schemas import MANIFEST_ID

MIN_F = "_min_f"  # the smallest f(h) of an image's labels, until importance and tail are derived

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
    share a label. Only for the label job's error message (a shuffle join)."""
    return (image_hashtags.select(MANIFEST_ID, F.explode("hashtags").alias("hashtag"))
            .join(hashtag_map, "hashtag").select(MANIFEST_ID, "label"))


def raw_label_table(raw_map: pa.Table, hashtag_map: pa.Table, label_images: pa.Table) -> tuple:
    """(raw strings, label of each or -1, f per label (index = label)) for label_rows."""
    hashtags = hashtag_map.column("hashtag").combine_chunks()
    labels = hashtag_map.column("label").combine_chunks().to_numpy(zero_copy_only=False).astype(np.int64)
    idx = pc.fill_null(pc.index_in(raw_map.column("hashtag"), value_set=hashtags), -1).to_numpy(zero_copy_only=False)
    raw_labels = np.where(idx >= 0, labels[np.maximum(idx, 0)], -1) if len(labels) else np.full(len(idx), -1)
    f = np.zeros(int(pc.max(label_images.column("label")).as_py()) + 1, dtype=np.int64)
    f[label_images.column("label").to_numpy()] = label_images.column("images").to_numpy()
    return raw_map.column("raw").combine_chunks(), raw_labels, f


def _with_min_f(batch: pa.RecordBatch, names: list[str], offsets: np.ndarray, values: np.ndarray,
                f: np.ndarray) -> pa.RecordBatch:
    """`batch`'s columns `names`, the rows with a label only, plus labels and MIN_F."""
    keep = np.diff(offsets) > 0
    labels = list_array(offsets, pa.array(values, pa.int32())).filter(pa.array(keep))
    fv = f[values]
    min_f = np.minimum.reduceat(fv, offsets[:-1][keep]) if keep.any() else np.zeros(0, np.int64)
    mask = pa.array(keep)
    cols = [batch.column(n).filter(mask) for n in names]
    return pa.RecordBatch.from_arrays([*cols, labels, pa.array(min_f, pa.int64())], names=[*names, "labels", MIN_F])


def _out_schema(df: DataFrame, drop: tuple[str, ...]) -> T.StructType:
    fields = [f for f in df.schema.fields if f.name not in drop]
    return T.StructType([*fields, T.StructField("labels", T.ArrayType(T.IntegerType(), False), False),
                         T.StructField(MIN_F, T.LongType(), False)])


def label_rows(clean: DataFrame, table) -> DataFrame:
    """clean_manifest's rows that carry a label, without the raw tags, plus `labels` (sorted,
    distinct) and MIN_F; `table` is a broadcast of raw_label_table(...). Narrow."""
    names = [c for c in clean.columns if c != TAGS]

    def fn(batches):
        raws, raw_labels, f = table.value
        for b in batches:
            offsets, values = codes_per_row(b.column(TAGS), raws, raw_labels, len(f))
            yield _with_min_f(b, names, offsets, values, f)
    return clean.mapInArrow(fn, _out_schema(clean, (TAGS,)))


def add_label_noise_narrow(rows: DataFrame, p: float, seed: int, marginal: np.ndarray, f: np.ndarray) -> DataFrame:
    """label_rows' rows with each label replaced with probability p by one drawn from the marginal
    excluding itself (uniforms from a hash of seed, image_id and the label's position);
    labels deduplicated and sorted again, MIN_F recomputed. Narrow."""
    def uniforms(name: str) -> F.Column:
        return F.transform("labels", lambda _, i: hash_uniform(seed, F.lit(name), F.col(MANIFEST_ID), i))
    staged = rows.drop(MIN_F).withColumn("_u1", uniforms("replace")).withColumn("_u2", uniforms("draw"))
    names = [c for c in rows.columns if c not in ("labels", MIN_F)]

    def fn(batches):
        for b in batches:
            flat, row = flat_with_rows(b.column("labels"))
            u1, u2 = (pc.list_flatten(b.column(c)).to_numpy(zero_copy_only=False) for c in ("_u1", "_u2"))
            new = noisy_labels(flat.to_numpy(zero_copy_only=False), u1, u2, p, marginal)
            offsets, values = dedupe_sorted(row, new.astype(np.int64), b.num_rows, len(f))
            yield _with_min_f(b, names, offsets, values, f)
    return staged.mapInArrow(fn, _out_schema(rows, ("labels", MIN_F)))


def with_importance_and_tail(rows: DataFrame, tail_threshold: int) -> DataFrame:
    """MIN_F replaced by importance = MIN_F^-1/2 (in the JVM, as before) and tail = MIN_F < threshold."""
    return (rows.withColumn("importance", F.pow(F.col(MIN_F).cast("double"), F.lit(-0.5)))
            .withColumn("tail", F.col(MIN_F) < F.lit(tail_threshold)).drop(MIN_F))
