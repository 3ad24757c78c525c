"""DataFrame -> DataFrame transforms of the vocabulary job (SWAG appendix A, Listing 1).

Row-scale work runs where each manifest partition lies, vectorised with Arrow (`mapInArrow`,
pipeline/tag_arrays.py); the manifest is read twice (its distinct raw strings and id hashes, then
the per-image hashtags written), the per-image table twice more by pyarrow straight from its
files. Only partial aggregates cross shuffles: each partition's distinct raw strings and id
hashes, its per-hashtag and per-label image counts. Python
runs once per distinct string: `normalize` per distinct raw tag, `get_synsets` per distinct
frequent hashtag. The string tables travel to executors as broadcast variables.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.lib.arrow_files import map_parquet_files
from jobs.lib.manifest import ID_HASH, TAGS
from pipeline.normalize import normalize
from pipeline.tag_arrays import codes_per_row, distinct_values, list_array, value_counts
from schemas import MANIFEST_ID

_WORDNET_CACHE: dict = {}


@dataclass(frozen=True)
class VocabParams:
    min_count: int = 2
    lexnames: tuple[str, ...] = ()
    max_labels: int | None = None
    align_synsets: frozenset[str] | None = None


def raw_strings_and_repeated_ids(valid: DataFrame) -> DataFrame:
    """(raw, ID_HASH) from one pass over the checked manifest rows: every distinct raw tag string
    (ID_HASH null) and every id hash seen on more than one row (raw null), so the duplicate-id
    check and the vocabulary's strings share the one read of the manifest.

    Each partition sends its own distinct strings, and its id hashes once each with their counts,
    across one shuffle (by hash, or by the string's hash); each reducer sorts what it received
    (numpy) and keeps the strings once and the hashes whose counts sum past 1. No hash aggregate
    in the JVM: with one key per image, its map-side partial aggregation only costs."""
    def sent(batches):
        seen, hashes = [], []
        for b in batches:
            hashes.append(b.column(0).to_numpy(zero_copy_only=False))
            seen.append(distinct_values(b.column(1)))
        if seen:
            raws = pc.unique(pa.concat_arrays(seen))
            yield pa.RecordBatch.from_arrays([raws, pa.nulls(len(raws), pa.int64()), pa.nulls(len(raws), pa.int64())],
                                             names=["raw", ID_HASH, "n"])
            h, n = np.unique(np.concatenate(hashes), return_counts=True)
            yield pa.RecordBatch.from_arrays([pa.nulls(len(h), pa.string()), pa.array(h, pa.int64()),
                                              pa.array(n, pa.int64())], names=["raw", ID_HASH, "n"])

    def received(batches):
        raws, hashes, counts = [], [], []
        for b in batches:
            is_raw = pc.is_valid(b.column(0))
            raws.append(pc.filter(b.column(0), is_raw))
            rest = pc.invert(is_raw)
            hashes.append(pc.filter(b.column(1), rest).to_numpy(zero_copy_only=False))
            counts.append(pc.filter(b.column(2), rest).to_numpy(zero_copy_only=False))
        if not raws:
            return
        unique_raws = pc.unique(pa.concat_arrays(raws))
        yield pa.RecordBatch.from_arrays([unique_raws, pa.nulls(len(unique_raws), pa.int64())], names=["raw", ID_HASH])
        h, n = np.concatenate(hashes), np.concatenate(counts)
        if len(h):
            order = np.argsort(h, kind="stable")
            h, n = h[order], n[order]
            starts = np.flatnonzero(np.concatenate(([True], h[1:] != h[:-1])))
            repeated = h[starts][np.add.reduceat(n, starts) > 1]
            yield pa.RecordBatch.from_arrays([pa.nulls(len(repeated), pa.string()), pa.array(repeated, pa.int64())],
                                             names=["raw", ID_HASH])
    key = F.coalesce(F.col(ID_HASH), F.xxhash64("raw"))
    return (valid.select(ID_HASH, TAGS).mapInArrow(sent, f"raw string, {ID_HASH} long, n long")
            .repartition(key).mapInArrow(received, f"raw string, {ID_HASH} long"))


def normalize_distinct(raw: DataFrame) -> DataFrame:
    """(raw, hashtag) for every row of `raw` (distinct); hashtag '' when nothing survives."""
    def fn(batches):
        for b in batches:
            raws = b.column(0).to_pylist()
            yield pa.RecordBatch.from_arrays([pa.array(raws, pa.string()),
                                              pa.array([normalize(r) for r in raws], pa.string())],
                                             names=["raw", "hashtag"])
    return raw.mapInArrow(fn, "raw string, hashtag string")


def tag_table(raw_map: pa.Table) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """(raw strings, code of each, sorted distinct non-empty hashtags): code i is dictionary[i],
    -1 for a raw string that normalizes to ''. Sorted codes give sorted hashtags."""
    hashtags = raw_map.column("hashtag").combine_chunks()
    dictionary = pc.unique(pc.filter(hashtags, pc.not_equal(hashtags, "")))
    dictionary = dictionary.take(pc.sort_indices(dictionary))
    codes = pc.fill_null(pc.index_in(hashtags, value_set=dictionary), -1).to_numpy(zero_copy_only=False)
    return raw_map.column("raw").combine_chunks(), codes.astype(np.int64), dictionary


def image_hashtags(clean: DataFrame, table) -> DataFrame:
    """(image_id, hashtags): each image's distinct normalized hashtags, sorted, empties dropped
    (schemas.IMAGE_HASHTAGS); an image whose tags all normalize to '' keeps an empty list.
    `table` is a broadcast of tag_table(raw_map). Narrow: no shuffle."""
    def fn(batches):
        keys, codes, dictionary = table.value
        for b in batches:
            offsets, values = codes_per_row(b.column(1), keys, codes, len(dictionary))
            yield pa.RecordBatch.from_arrays([b.column(0), list_array(offsets, dictionary.take(pa.array(values)))],
                                             names=[MANIFEST_ID, "hashtags"])
    return clean.select(MANIFEST_ID, TAGS).mapInArrow(fn, f"{MANIFEST_ID} string, hashtags array<string>")


def hashtag_counts(spark, image_hashtags_path: str) -> DataFrame:
    """(hashtag, images) of the IMAGE_HASHTAGS table at the path (hashtags distinct per image):
    per-file counts, read by pyarrow in the tasks (jobs/lib/arrow_files.py), summed across files."""
    def fn(batches):
        parts = [value_counts(pc.list_flatten(b.column(0))) for b in batches]
        parts = [(v, n) for v, n in parts if len(v)]
        if parts:
            t = pa.table({"hashtag": pa.concat_arrays([v for v, _ in parts]),
                          "n": np.concatenate([n for _, n in parts])}).group_by("hashtag").aggregate([("n", "sum")])
            yield from t.rename_columns(["hashtag", "n"]).to_batches()
    return (map_parquet_files(spark, image_hashtags_path, ["hashtags"], fn, "hashtag string, n long")
            .groupBy("hashtag").agg(F.sum("n").alias("images")))


def lookup_synsets(hashtags: DataFrame, lexnames: tuple[str, ...], wordnet_dir_fn, calls=None) -> DataFrame:
    """(hashtag, synsets): `get_synsets` once per row of `hashtags` (distinct), on executors.

    `wordnet_dir_fn` runs on the executor and returns the WordNet directory there; the reader
    is loaded once per Python worker. `calls` is an optional accumulator of lookups.
    """
    def fn(batches):
        from pipeline.wordnet import get_synsets, load_wordnet

        d = str(wordnet_dir_fn())
        if d not in _WORDNET_CACHE:
            _WORDNET_CACHE[d] = load_wordnet(d)
        wn = _WORDNET_CACHE[d]
        for b in batches:
            tags = b.column(0).to_pylist()
            syn = [list(get_synsets(t, wn, lexnames)) for t in tags]
            if calls is not None:
                calls.add(len(tags))
            yield pa.RecordBatch.from_arrays([pa.array(tags, pa.string()), pa.array(syn, pa.list_(pa.string()))],
                                             names=["hashtag", "synsets"])
    return hashtags.select("hashtag").mapInArrow(fn, "hashtag string, synsets array<string>")


def keyed_hashtags(tag_counts: DataFrame, tag_synsets: DataFrame) -> DataFrame:
    """(hashtag, synsets, key, images): hashtags with non-empty synsets; key = the sorted synset
    names joined with '+' (hashtags sharing a key form one label)."""
    return (tag_synsets.filter(F.size("synsets") > 0)
            .withColumn("key", F.array_join(F.array_sort("synsets"), "+"))
            .join(tag_counts, "hashtag"))


def key_table(keyed: pa.Table) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """(hashtags, key code of each, distinct keys) for label_image_counts."""
    keys = pc.unique(keyed.column("key").combine_chunks())
    codes = pc.index_in(keyed.column("key"), value_set=keys).to_numpy(zero_copy_only=False)
    return keyed.column("hashtag").combine_chunks(), codes.astype(np.int64), keys


def label_image_counts(spark, image_hashtags_path: str, table) -> DataFrame:
    """(key, images): images carrying each label key (an image counts once per key), from per-file
    counts over the IMAGE_HASHTAGS table at the path (read as hashtag_counts reads it); `table` is
    a broadcast of key_table(keyed)."""
    def fn(batches):
        tags, codes, keys = table.value
        total = np.zeros(len(keys), dtype=np.int64)
        for b in batches:
            _, values = codes_per_row(b.column(0), tags, codes, len(keys))
            total += np.bincount(values, minlength=len(keys))
        hit = np.flatnonzero(total)
        yield pa.RecordBatch.from_arrays([keys.take(pa.array(hit)), pa.array(total[hit], pa.int64())],
                                         names=["key", "n"])
    return (map_parquet_files(spark, image_hashtags_path, ["hashtags"], fn, "key string, n long")
            .groupBy("key").agg(F.sum("n").alias("images")))


def canonical_vocabulary(keyed: DataFrame, label_images: DataFrame, p: VocabParams) -> tuple[DataFrame, DataFrame, dict]:
    """(vocab, hashtag_map, dropped-hashtag counts by reason) from keyed_hashtags' rows and the
    (key, images) counts of label_image_counts. Labels are numbered by images desc, ties by key."""
    groups = keyed.groupBy("key").agg(
        F.first(F.array_sort("synsets")).alias("synsets"),
        F.array_sort(F.collect_list("hashtag")).alias("hashtags"),
        # display name: most frequent raw hashtag, ties -> lexicographically smallest
        F.min_by("hashtag", F.struct(-F.col("images"), F.col("hashtag"))).alias("name"))
    labels = groups.join(label_images, "key")
    dropped = {}
    if p.align_synsets is not None:
        aligned = F.arrays_overlap("synsets", F.array(*[F.lit(s) for s in sorted(p.align_synsets)]))
        dropped["not_aligned"] = labels.filter(~aligned).select(F.sum(F.size("hashtags"))).first()[0] or 0
        labels = labels.filter(aligned)
    order = Window.orderBy(F.col("images").desc(), F.col("key"))
    labels = labels.withColumn("label", (F.row_number().over(order) - 1).cast("int"))
    if p.max_labels is not None:
        dropped["beyond_max_labels"] = labels.filter(F.col("label") >= p.max_labels).select(
            F.sum(F.size("hashtags"))).first()[0] or 0
        labels = labels.filter(F.col("label") < p.max_labels)
    vocab = labels.select("label", "name", "key", "synsets", "hashtags", F.col("images").cast("long"))
    hashtag_map = vocab.select(F.explode("hashtags").alias("hashtag"), "label")
    return vocab, hashtag_map, {k: int(v) for k, v in dropped.items()}
