"""Per-image labels, importance factors max f(h)^-1/2 and head/tail flags (SWAG section 3.1).

    spark-submit jobs/label.py --manifest build/demo/manifest.parquet --vocab build/demo/vocab \
        --out build/demo/labeled [--tail-threshold 5000] [--label-noise P --seed S]

Labels come from the vocab job's OUT/image_hashtags.parquet (hashtags normalized once, there);
the manifest gives the other columns, which pass through. Writes OUT/labeled.parquet, whose
labels column records C, the vocabulary's size (schemas.NUM_CLASSES), and OUT/stats.json,
atomically.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

import schemas  # noqa: E402
from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.labeling import (add_label_noise, class_count_of_vocabulary, image_label_rows,  # noqa: E402
                               importance_and_tail, label_sets)
from jobs.lib.manifest import TAGS, clean_manifest, read_manifest  # noqa: E402
from jobs.lib.output import atomic_output, write_json  # noqa: E402
from jobs.lib.session import get_session  # noqa: E402
from jobs.lib.tables import read_checked, with_class_count  # noqa: E402

_IN_MANIFEST = "_in_manifest"


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
    label_images = vocab.select("label", "images").cache()
    n_labels = class_count_of_vocabulary(label_images, hashtag_map, cfg.vocab)
    clean, row_stats = clean_manifest(read_manifest(spark, cfg.manifest))  # the other columns pass through
    rows = image_label_rows(image_tags, hashtag_map)
    if cfg.label_noise > 0:
        marginal = np.zeros(n_labels)
        for r in label_images.collect():
            marginal[r["label"]] = r["images"]
        noisy = add_label_noise(label_sets(rows), cfg.label_noise, cfg.seed, marginal)
        rows = noisy.select(schemas.MANIFEST_ID, F.explode("labels").alias("label"))
    scored = importance_and_tail(rows, label_images, cfg.tail_threshold)
    labeled = scored.join(clean.drop(TAGS).withColumn(_IN_MANIFEST, F.lit(True)), schemas.MANIFEST_ID, "left").cache()
    found = {r[_IN_MANIFEST]: r["count"] for r in labeled.groupBy(_IN_MANIFEST).count().collect()}
    n_labeled, n_absent = found.get(True, 0), found.get(None, 0)
    if n_labeled == 0:
        raise ValueError(f"no image of {cfg.manifest} carries a hashtag of the vocabulary {cfg.vocab}: "
                         "is it the vocabulary of this manifest?")
    n_vocab_images = image_tags.count()
    if n_absent or n_vocab_images != row_stats["rows_kept"]:
        raise ValueError(f"{cfg.manifest} is not the manifest the vocabulary {cfg.vocab} was built from: "
                         f"{row_stats['rows_kept']} images kept here, {n_vocab_images} in "
                         f"{cfg.vocab}/image_hashtags.parquet, {n_absent} of its labelled images absent here")
    first = ["image_id", "image", "labels", "importance", "tail"]
    labeled = labeled.drop(_IN_MANIFEST)
    labeled = with_class_count(labeled.select(*first, *[c for c in labeled.columns if c not in first]),
                               n_labels, cfg.vocab)
    with atomic_output(spark, cfg.out) as tmp:
        labeled.write.parquet(f"{tmp}/labeled.parquet")
        tails = {r["tail"]: r["count"] for r in labeled.groupBy("tail").count().collect()}
        hist = {int(r["k"]): r["count"] for r in
                labeled.groupBy(F.size("labels").alias("k")).count().collect()}
        stats = {**row_stats, "rows_dropped": {**row_stats["rows_dropped"],
                                               "no_label": row_stats["rows_kept"] - n_labeled},
                 "rows_kept": n_labeled, "head_images": tails.get(False, 0), "tail_images": tails.get(True, 0),
                 "labels_per_image": dict(sorted(hist.items())), "vocab_size": n_labels,
                 "config": vars(cfg)}
        write_json(spark, f"{tmp}/stats.json", stats)
    return stats


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(LabelConfig, argv, __doc__.splitlines()[0])
    stats = run(get_session("label", cfg.master), cfg)
    print(f"label: {stats['rows_kept']} labeled images ({stats['head_images']} head, {stats['tail_images']} tail; "
          f"dropped {stats['rows_dropped']}) -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
