"""Per-image labels, importance factors max f(h)^-1/2 and head/tail flags (SWAG section 3.1).

    spark-submit jobs/label.py --manifest build/demo/manifest.parquet --vocab build/demo/vocab \
        --out build/demo/labeled [--tail-threshold 5000] [--label-noise P --seed S]

One narrow pass over the manifest: its raw tags, taken as the vocabulary took them (its
stats.json's --tags-from: hashtags, or WordNet entries matched in captions), are mapped through
the vocab job's OUT/raw_map.parquet (hashtags normalized once, there) and hashtag_map to labels;
the other columns pass through. The manifest must be the vocabulary's (checked against
OUT/image_hashtags.parquet: same images). Writes OUT/labeled.parquet, whose
labels column records C, the vocabulary's size (schemas.NUM_CLASSES), and OUT/stats.json,
atomically.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from pyspark.sql import Observation  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

import schemas  # noqa: E402
from jobs.lib.caption_tags import vocabulary_tag_source  # noqa: E402
from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.errors import reported  # noqa: E402
from jobs.lib.labeling import (add_label_noise_narrow, class_count_of_vocabulary, image_label_rows,  # noqa: E402
                               label_rows, raw_label_table, with_importance_and_tail)
from jobs.lib.manifest import clean_manifest, read_manifest, repeated_id_hashes  # noqa: E402
from jobs.lib.output import atomic_output, read_text, write_json  # noqa: E402
from jobs.lib.session import get_session, input_bytes, ship_wordnet, tune_session  # noqa: E402
from jobs.lib.tables import read_checked, with_class_count  # noqa: E402


@dataclass(frozen=True)
class LabelConfig:
    manifest: str = field(metadata={"help": "manifest, Parquet or JSON Lines"})
    vocab: str = field(metadata={"help": "output directory of jobs/vocab.py"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    tail_threshold: int = field(default=5000, metadata={"help": "tail: some label has f(h) below this"})
    label_noise: float = field(default=0.0, metadata={"help": "WSL label-noise probability"})
    seed: int = field(default=0, metadata={"help": "seed of the label noise"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's)"})

    def __post_init__(self):
        if self.tail_threshold < 1:
            raise ValueError(f"--tail-threshold must be >= 1, got {self.tail_threshold}")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"--label-noise must be in [0, 1), got {self.label_noise}")


def run(spark, cfg: LabelConfig) -> dict:
    vocab = read_checked(spark, f"{cfg.vocab}/vocab.parquet", schemas.VOCAB)
    hashtag_map = read_checked(spark, f"{cfg.vocab}/hashtag_map.parquet", schemas.HASHTAG_MAP)
    image_tags = read_checked(spark, f"{cfg.vocab}/image_hashtags.parquet", schemas.IMAGE_HASHTAGS)
    raw_map = read_checked(spark, f"{cfg.vocab}/raw_map.parquet", schemas.RAW_MAP)
    label_images = vocab.select("label", "images").cache()
    n_labels = class_count_of_vocabulary(label_images, hashtag_map, cfg.vocab)
    source = vocabulary_tag_source(spark, cfg.vocab)  # the vocabulary's rule, never a flag of ours
    if source.captions:
        ship_wordnet(spark, source.wordnet)
    manifest = read_manifest(spark, cfg.manifest, source)
    tune_session(spark, input_bytes(spark, cfg.manifest))
    checked = clean_manifest(manifest, source)  # the other columns pass through
    # The vocabulary's own read of this manifest found its repeated ids: none (the usual case)
    # lets the labelling be the only pass; the count and id sum compared below catch a manifest
    # that is not the vocabulary's, repeated ids included.
    repeated = repeated_id_hashes(checked.valid) if vocabulary_saw_duplicates(spark, cfg.vocab) else None
    clean = checked.without_duplicates(repeated)
    kept = Observation("kept rows and their id hash sum")
    clean = clean.observe(kept, F.count("*").alias("rows"), id_hash_sum(clean).alias("id_sum"))
    # raw -> label, one row per distinct raw string: the driver's share, broadcast to executors
    table = raw_label_table(raw_map.toArrow(), hashtag_map.toArrow(), label_images.toArrow())
    rows = label_rows(clean, spark.sparkContext.broadcast(table))
    if cfg.label_noise > 0:
        marginal = table[2].astype(np.float64)
        rows = add_label_noise_narrow(rows, cfg.label_noise, cfg.seed, marginal, table[2])
    labeled = with_importance_and_tail(rows, cfg.tail_threshold)
    first = ["image_id", "image", "labels", "importance", "tail"]
    labeled = with_class_count(labeled.select(*first, *[c for c in labeled.columns if c not in first]),
                               n_labels, cfg.vocab)
    with atomic_output(spark, cfg.out) as tmp:
        labeled.write.parquet(f"{tmp}/labeled.parquet")
        written = spark.read.parquet(f"{tmp}/labeled.parquet")
        groups = written.groupBy("tail", F.size("labels").alias("k")).count().collect()
        n_labeled = sum(r["count"] for r in groups)
        if n_labeled == 0:
            raise ValueError(f"no image of {cfg.manifest} carries a hashtag of the vocabulary {cfg.vocab}: "
                             "is it the vocabulary of this manifest?")
        row_stats = checked.stats()
        check_same_images(clean, image_tags, hashtag_map, (kept.get["rows"], kept.get["id_sum"]), cfg)
        tails, hist = {}, {}
        for r in groups:
            tails[r["tail"]] = tails.get(r["tail"], 0) + r["count"]
            hist[int(r["k"])] = hist.get(int(r["k"]), 0) + r["count"]
        stats = {**row_stats, "rows_dropped": {**row_stats["rows_dropped"],
                                               "no_label": row_stats["rows_kept"] - n_labeled},
                 "rows_kept": n_labeled, "head_images": tails.get(False, 0), "tail_images": tails.get(True, 0),
                 "labels_per_image": dict(sorted(hist.items())), "vocab_size": n_labels,
                 "config": vars(cfg)}
        write_json(spark, f"{tmp}/stats.json", stats)
    return stats


def id_hash_sum(df):
    """The sum of the rows' image_id hashes, exact (a 38-digit decimal): with the row count, a
    fingerprint of a set of ids that any partitioning sums alike."""
    return F.sum(F.xxhash64(schemas.MANIFEST_ID).cast("decimal(38,0)"))


def vocabulary_saw_duplicates(spark, vocab_dir: str) -> bool:
    """Whether the vocabulary job dropped repeated image ids from its manifest (its stats.json);
    True when that cannot be read, so the label job then looks for them itself."""
    try:
        return json.loads(read_text(spark, f"{vocab_dir}/stats.json"))["rows_dropped"]["duplicate_image_id"] > 0
    except Exception:
        return True


def check_same_images(clean, image_tags, hashtag_map, kept: tuple[int, object], cfg: LabelConfig) -> None:
    """A ValueError unless the manifest's kept images (`kept`: their count and id hash sum, observed
    while labelling) are the vocabulary's (one narrow aggregate over its ids); the exact number of
    absent images only on that error path."""
    rows_kept = kept[0]
    n_vocab_images, vocab_sum = image_tags.agg(F.count("*"), id_hash_sum(image_tags)).first()
    if (n_vocab_images, vocab_sum) == kept:
        return
    labelled = image_label_rows(image_tags, hashtag_map).select(schemas.MANIFEST_ID).distinct()
    n_absent = labelled.join(clean.select(schemas.MANIFEST_ID), schemas.MANIFEST_ID, "left_anti").count()
    raise ValueError(f"{cfg.manifest} is not the manifest the vocabulary {cfg.vocab} was built from: "
                     f"{rows_kept} images kept here, {n_vocab_images} in "
                     f"{cfg.vocab}/image_hashtags.parquet, {n_absent} of its labelled images absent here")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(LabelConfig, argv, __doc__.splitlines()[0])
    with reported("label"):
        stats = run(get_session("label", cfg.master), cfg)
    print(f"label: {stats['rows_kept']} labeled images ({stats['head_images']} head, {stats['tail_images']} tail; "
          f"dropped {stats['rows_dropped']}) -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
