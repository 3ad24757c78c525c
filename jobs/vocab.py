"""Canonical WordNet hashtag vocabulary (SWAG appendix A, Listing 1).

    spark-submit jobs/vocab.py --manifest build/demo/manifest.parquet --out build/demo/vocab \
        [--min-count 2] [--lexnames noun.animal,noun.food,...] [--max-labels K] \
        [--align-synsets FILE] [--wordnet DIR] [--tags-from hashtags|caption [--caption-column text]] \
        [--master local[*]]

An image's raw tags are its `hashtags` plus its caption's `#words` (--tags-from hashtags), or the
WordNet noun entries of --lexnames matched in its --caption-column (--tags-from caption,
pipeline/caption_match.py); jobs/label.py takes the same from this job's stats.json.

Writes OUT/vocab.parquet, OUT/hashtag_map.parquet, OUT/image_hashtags.parquet (each kept image's
normalized hashtags, read by jobs/dataset_card.py), OUT/raw_map.parquet (each distinct raw tag string
and its normalized hashtag, read by jobs/label.py) and OUT/stats.json, atomically.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.compute as pc  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.errors import reported  # noqa: E402
from jobs.lib.caption_tags import TAG_SOURCES, TagSource, entry_stats  # noqa: E402
from jobs.lib.manifest import ID_HASH, clean_manifest, read_manifest  # noqa: E402
from jobs.lib.output import atomic_output, write_json  # noqa: E402
from jobs.lib.session import executor_wordnet_dir, get_session, input_bytes, ship_wordnet, tune_session  # noqa: E402
from jobs.lib.vocabulary import (VocabParams, canonical_vocabulary, hashtag_counts, image_hashtags,  # noqa: E402
                                 key_table, keyed_hashtags, label_image_counts, lookup_synsets,
                                 normalize_distinct, raw_strings_and_repeated_ids, tag_table)
from pipeline.wordnet import DEFAULT_LEXNAMES, load_wordnet, resolve_synsets  # noqa: E402

log = logging.getLogger("vocab")


@dataclass(frozen=True)
class VocabConfig:
    manifest: str = field(metadata={"help": "manifest, Parquet or JSON Lines"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    min_count: int = field(default=2, metadata={"help": "images a raw hashtag needs to enter"})
    lexnames: tuple[str, ...] = field(default=DEFAULT_LEXNAMES, metadata={"help": "comma-separated lexnames"})
    max_labels: int | None = field(default=None, metadata={"help": "keep the K most frequent labels"})
    align_synsets: str | None = field(default=None, metadata={"help": "file of synset names/offsets"})
    wordnet: str | None = field(default=None, metadata={"help": "NLTK WordNet dir (default: make setup's)"})
    tags_from: str = field(default="hashtags", metadata={
        "help": f"{' or '.join(TAG_SOURCES)}: the hashtags column and captions' #words, or WordNet entries in captions"})
    caption_column: str = field(default="caption", metadata={"help": "--tags-from caption: the column of captions"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's, local[*])"})

    def __post_init__(self):
        if self.min_count < 1:
            raise ValueError(f"--min-count must be >= 1, got {self.min_count}")
        if self.max_labels is not None and self.max_labels < 1:
            raise ValueError(f"--max-labels must be >= 1, got {self.max_labels}")
        if not self.lexnames:
            raise ValueError("--lexnames is empty")
        if self.align_synsets and not Path(self.align_synsets).is_file():
            raise ValueError(f"--align-synsets {self.align_synsets}: no such file")
        TagSource.from_config(vars(self))  # validates --tags-from and --caption-column


def run(spark, cfg: VocabConfig) -> dict:
    wn = load_wordnet(cfg.wordnet)  # fail before any Spark work if WordNet is missing
    unknown = set(cfg.lexnames) - set(wn._lexnames)
    if unknown:
        raise ValueError(f"unknown lexnames: {sorted(unknown)}")
    align = None
    if cfg.align_synsets:
        align = frozenset(resolve_synsets(Path(cfg.align_synsets).read_text().splitlines(), wn))
    ship_wordnet(spark, cfg.wordnet)
    calls = spark.sparkContext.accumulator(0)
    source = TagSource.from_config(vars(cfg))
    manifest = read_manifest(spark, cfg.manifest, source)
    tune_session(spark, input_bytes(spark, cfg.manifest))
    checked = clean_manifest(manifest, source)
    # the one read of the manifest before the per-image table: distinct raw strings, repeated id
    # hashes and (observed) the rows' drop reasons
    scanned = raw_strings_and_repeated_ids(checked.valid).cache()
    raw_map_df = normalize_distinct(scanned.filter(F.col("raw").isNotNull()).select("raw")).cache()
    raw_map = raw_map_df.toArrow()  # one row per distinct raw string: the driver's share
    clean = checked.without_duplicates(scanned.filter(F.col(ID_HASH).isNotNull()).select(ID_HASH))
    row_stats = checked.stats()
    tags = spark.sparkContext.broadcast(tag_table(raw_map))
    params = VocabParams(cfg.min_count, cfg.lexnames, cfg.max_labels, align)
    with atomic_output(spark, cfg.out) as tmp:
        image_hashtags(clean, tags).write.parquet(f"{tmp}/image_hashtags.parquet")  # read by label and the card
        counts = hashtag_counts(spark, f"{tmp}/image_hashtags.parquet").cache()
        frequent = counts.filter(F.col("images") >= cfg.min_count)
        synsets = lookup_synsets(frequent, cfg.lexnames, executor_wordnet_dir, calls).cache()
        keyed = keyed_hashtags(frequent, synsets).cache()
        keys = spark.sparkContext.broadcast(key_table(keyed.select("hashtag", "key").toArrow()))
        vocab, hashtag_map, dropped = canonical_vocabulary(keyed, label_image_counts(spark, f"{tmp}/image_hashtags.parquet", keys), params)
        vocab = vocab.cache()
        vocab.repartition(1).sortWithinPartitions("label").write.parquet(f"{tmp}/vocab.parquet")
        hashtag_map.orderBy("hashtag").write.parquet(f"{tmp}/hashtag_map.parquet")
        raw_map_df.orderBy("raw").write.parquet(f"{tmp}/raw_map.parquet")
        n_hashtags, n_frequent = counts.agg(F.count("*"), F.sum((F.col("images") >= cfg.min_count).cast("long"))).first()
        n_no_synsets = synsets.filter(F.size("synsets") == 0).count()
        n_labels, n_kept = vocab.agg(F.count("*"), F.sum(F.size("hashtags"))).first()
        if source.captions:
            row_stats["captions"].update(entry_stats(counts))
        stats = {
            "manifest": cfg.manifest, **row_stats,
            "distinct_raw_strings": raw_map.num_rows,
            "distinct_hashtags": n_hashtags,
            "hashtags_kept": int(n_kept or 0),
            "hashtags_dropped": {"empty_after_normalize": pc.sum(pc.equal(raw_map.column("hashtag"), "")).as_py() or 0,
                                 "below_min_count": n_hashtags - (n_frequent or 0),
                                 "no_synsets": n_no_synsets, **dropped},
            "vocab_size": n_labels,
            "get_synsets_calls": calls.value,
            "normalize_calls": raw_map.num_rows,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        }
        write_json(spark, f"{tmp}/stats.json", stats)
    for b in (tags, keys):
        b.unpersist()
    log.warning("normalize called %d times, get_synsets %d times for %d distinct hashtags; vocabulary: %d labels",
                raw_map.num_rows, calls.value, n_hashtags, n_labels)
    return stats


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(VocabConfig, argv, __doc__.splitlines()[0])
    spark = get_session("vocab", cfg.master)
    with reported("vocab"):
        stats = run(spark, cfg)
    print(f"vocab: {stats['vocab_size']} labels from {stats['distinct_hashtags']} hashtags "
          f"({stats['rows_kept']}/{stats['rows_read']} rows) -> {cfg.out}")
    return stats


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
