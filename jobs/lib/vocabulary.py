"""DataFrame -> DataFrame transforms of the vocabulary job (SWAG appendix A, Listing 1).

Row-scale work (explode, distinct, joins, counts) stays in the JVM; Python runs once per
distinct string: `normalize` per distinct raw tag, `get_synsets` per distinct hashtag.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.lib.manifest import TAGS
from pipeline.normalize import normalize
from schemas import MANIFEST_ID

_WORDNET_CACHE: dict = {}


@dataclass(frozen=True)
class VocabParams:
    min_count: int = 2
    lexnames: tuple[str, ...] = ()
    max_labels: int | None = None
    align_synsets: frozenset[str] | None = None


def raw_tag_strings(clean: DataFrame) -> DataFrame:
    """(image_id, raw): one row per distinct raw tag string of an image. clean_manifest keeps one
    row per image_id, so a per-row array_distinct replaces a shuffle of every (image, tag) pair."""
    return clean.select(MANIFEST_ID, F.explode(F.array_distinct(F.col(TAGS))).alias("raw"))


def normalize_distinct(raw: DataFrame) -> DataFrame:
    """(raw, hashtag) for every distinct raw string; hashtag '' when nothing survives."""
    def fn(batches):
        for b in batches:
            raws = b.column(0).to_pylist()
            yield pa.RecordBatch.from_arrays([pa.array(raws, pa.string()),
                                              pa.array([normalize(r) for r in raws], pa.string())],
                                             names=["raw", "hashtag"])
    return raw.select("raw").distinct().mapInArrow(fn, "raw string, hashtag string")


def image_hashtags(image_raw: DataFrame, raw_map: DataFrame) -> DataFrame:
    """(image_id, hashtags): each image's distinct normalized hashtags, sorted, empties dropped
    (schemas.IMAGE_HASHTAGS); an image whose tags all normalize to '' keeps an empty list. One
    shuffle by image_id, the one a distinct over (image_id, hashtag) rows would take."""
    tag = F.when(F.col("hashtag") != "", F.col("hashtag"))  # null: skipped by collect_set
    return (image_raw.join(raw_map, "raw").groupBy(MANIFEST_ID)
            .agg(F.array_sort(F.collect_set(tag)).alias("hashtags")))


def image_hashtag_rows(per_image: DataFrame) -> DataFrame:
    """(image_id, hashtag) rows of an IMAGE_HASHTAGS table: distinct by construction, no shuffle."""
    return per_image.select(MANIFEST_ID, F.explode("hashtags").alias("hashtag"))


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


def canonical_vocabulary(img_tags: DataFrame, tag_counts: DataFrame, tag_synsets: DataFrame,
                         p: VocabParams) -> tuple[DataFrame, DataFrame, dict]:
    """(vocab, hashtag_map, dropped-hashtag counts by reason).

    tag_counts: (hashtag, images) for hashtags with images >= min_count; tag_synsets: their
    (hashtag, synsets). Hashtags with identical non-empty synset sets form one label.
    """
    keyed = (tag_synsets.filter(F.size("synsets") > 0)
             .withColumn("key", F.array_join(F.array_sort("synsets"), "+"))
             .join(tag_counts, "hashtag"))
    groups = keyed.groupBy("key").agg(
        F.first(F.array_sort("synsets")).alias("synsets"),
        F.array_sort(F.collect_list("hashtag")).alias("hashtags"),
        # display name: most frequent raw hashtag, ties -> lexicographically smallest
        F.min_by("hashtag", F.struct(-F.col("images"), F.col("hashtag"))).alias("name"))
    label_images = (img_tags.join(keyed.select("hashtag", "key"), "hashtag")
                    .select(MANIFEST_ID, "key").distinct().groupBy("key").agg(F.count("*").alias("images")))
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
