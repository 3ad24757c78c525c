"""Head/tail resampled sample index of exactly M samples (SWAG section 3.1; WSL's strategies), or
MetaCLIP's balanced subset.

    spark-submit jobs/resample.py --labeled build/demo/labeled --out build/demo/samples \
        --num-samples 20000 [--alpha 0.7] [--strategy importance|sqrt|uniform|natural] [--seed 0] \
        [--shards build/demo/shards [--epochs E]] [--unique-images N]
    spark-submit jobs/resample.py ... --strategy metaclip --cap T    (no --num-samples)

importance (SWAG): round(alpha*M) draws with replacement from head images, p_i proportional to
the importance factor, the rest from tail images likewise. natural/sqrt/uniform (WSL): a hashtag
drawn with probability proportional to f, sqrt(f) or 1, then one of its images uniformly; alpha
does not apply. metaclip (MetaCLIP balancing, jobs/lib/balancing.py): each image kept once or
not at all, with probability 1 - prod over its labels h of (1 - min(1, T / f(h))); the number of
samples K is what the draw keeps (about sum p_i, in stats.json); alpha does not apply. Writes
OUT/samples.parquet (position-ordered; its labels column carries the class count recorded in
labeled.parquet) and OUT/stats.json, atomically.

--shards DIR binds the draw to a shard set of unique images (jobs/shards.py): OUT/index/ holds,
per epoch, each sample's stored image, and index.json (schemas/sample_index.py); the loaders
apply it at read time (the trainer's sample_index=OUT); samples whose image the shards job
rejected are dropped and counted per epoch.
--epochs E draws E independent indices (epoch 0 with --seed, as samples.parquet; epoch e with a
seed derived from (seed, e)): online rebalancing, one fresh draw per epoch (with metaclip, epochs
differ in length). --unique-images N first keeps a seeded subset of N labelled images (the N
smallest hashes of (seed, image_id)), then draws from them: SWAG appendix C.2, unique images vs
samples seen.
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
from jobs.lib.errors import reported  # noqa: E402
from jobs.lib.numbering import files_by_range, number_rows  # noqa: E402
from jobs.lib.output import atomic_output, read_text, write_json, write_text  # noqa: E402
from jobs.lib.balancing import MetaclipDraws  # noqa: E402
from jobs.lib.resampling import WeightedDraws  # noqa: E402
from jobs.lib.session import get_session, input_bytes, tune_session  # noqa: E402
from jobs.lib.tables import check_label_range, class_count, read_checked, with_class_count  # noqa: E402
from pipeline.sampling import ALL, METACLIP, STRATEGIES, split_sizes  # noqa: E402
from schemas.sample_index import (INDEX_DIR, INDEX_FILE, SHARD_SAMPLES, SampleIndexMeta, epoch_dir_name,  # noqa: E402
                                  shard_set_sha256)
from schemas.shard_set import SHARD_SET_FILE, ShardSetMeta  # noqa: E402


PAYLOAD = ["image", "labels", "tail"]  # samples.parquet's columns besides position and image_id
PAYLOAD_ORDER = ["image_id", *PAYLOAD]


@dataclass(frozen=True)
class ResampleConfig:
    labeled: str = field(metadata={"help": "output directory of jobs/label.py"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    num_samples: int | None = field(default=None, metadata={
        "help": "M, the exact number of samples (not with --strategy metaclip, which keeps a random number)"})
    alpha: float = field(default=0.7, metadata={"help": "share of samples drawn from head images"})
    strategy: str = field(default="importance", metadata={"help": "|".join(STRATEGIES)})
    cap: int | None = field(default=None, metadata={
        "help": "T of --strategy metaclip (only): a label of f images keeps each with probability min(1, T / f)"})
    seed: int = field(default=0, metadata={"help": "seed of the draw and the shuffle"})
    rows_per_bucket: int = field(default=200_000, metadata={"help": "logical bucket size (memory bound)"})
    shards: str | None = field(default=None, metadata={"help": "bind to this shard set (jobs/shards.py): OUT/index/"})
    epochs: int = field(default=1, metadata={"help": "independent draws, one per epoch (needs --shards)"})
    unique_images: int | None = field(default=None, metadata={"help": "draw from a seeded subset of N images"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's)"})

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown --strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.strategy == METACLIP:
            if self.num_samples is not None:
                raise ValueError(f"--num-samples {self.num_samples} does not apply to --strategy metaclip: it keeps "
                                 "a random subset of about sum p_i images (stats.json's expected_samples); "
                                 "omit --num-samples and size it with --cap")
            if self.cap is None or self.cap < 1:
                raise ValueError(f"--strategy metaclip needs --cap T >= 1 (each label keeps about T of its images), "
                                 f"got {self.cap}")
        else:
            if self.cap is not None:
                raise ValueError(f"--cap applies to --strategy metaclip only, not {self.strategy}")
            if self.num_samples is None or self.num_samples < 1:
                raise ValueError(f"--num-samples must be >= 1 with --strategy {self.strategy}, got {self.num_samples}")
            split_sizes(self.num_samples, self.alpha)  # validates alpha in [0, 1]
        if self.rows_per_bucket < 1:
            raise ValueError("--rows-per-bucket must be >= 1")
        if self.epochs < 1 or (self.epochs > 1 and self.shards is None):
            raise ValueError(f"--epochs {self.epochs}: must be >= 1, and more than 1 needs --shards")
        if self.unique_images is not None and self.unique_images < 1:
            raise ValueError(f"--unique-images must be >= 1, got {self.unique_images}")


def run(spark, cfg: ResampleConfig) -> dict:
    where = f"{cfg.labeled}/labeled.parquet"
    table = read_checked(spark, where, schemas.LABELED.remove(1))
    tune_session(spark, input_bytes(spark, where))
    num_classes, vocabulary = class_count(table, where)  # carried into samples.parquet for the shards
    check_label_range(table.select("labels"), num_classes, where, vocabulary)
    # the draw carries the columns samples.parquet holds, so no join brings them back
    needs = ["importance"] if cfg.strategy == "importance" else []
    labeled = table.select("image_id", *PAYLOAD, *needs)
    if cfg.unique_images is not None:
        labeled = unique_subset(labeled, cfg.unique_images, cfg.seed)
    if cfg.strategy not in ("importance", METACLIP) or cfg.unique_images is not None:
        labeled = labeled.cache()  # read again by the weights' joins, the label counts or the subset's numbering
    if cfg.strategy == METACLIP:  # caches its own table, with each image's keep probability
        draws = MetaclipDraws(labeled, cfg.cap, num_classes, cfg.rows_per_bucket, PAYLOAD)
    else:
        sizes = split_sizes(cfg.num_samples, cfg.alpha) if cfg.strategy == "importance" else {ALL: cfg.num_samples}
        draws = WeightedDraws(labeled, cfg.strategy, sizes, cfg.rows_per_bucket, PAYLOAD)
    if cfg.unique_images is not None and draws.images < cfg.unique_images:
        raise ValueError(f"--unique-images {cfg.unique_images}: {where} has only {draws.images} images")
    drawn, total = draws.draw(cfg.seed)
    samples = with_class_count(drawn.select("position", *PAYLOAD_ORDER), num_classes, vocabulary)
    n_files = max(1, total // 1_000_000)
    with atomic_output(spark, cfg.out) as tmp:
        files_by_range(samples, "position", total, n_files).write.parquet(f"{tmp}/samples.parquet")
        index = write_index(spark, cfg, f"{tmp}/{INDEX_DIR}", drawn, draws.draw, n_files) if cfg.shards else None
        stats = {"labeled_images": draws.images, **draws.stats(), "config": vars(cfg)}
        if index is not None:
            stats["index"] = index.to_dict()
        write_json(spark, f"{tmp}/stats.json", stats)
    return stats


def epoch_seed(seed: int, epoch: int) -> int:
    """Epoch 0 draws with the seed itself (samples.parquet); epoch e with one derived from (seed, e)."""
    return seed if epoch == 0 else int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)[0])


def unique_subset(labeled, n: int, seed: int):
    """The n labelled images with the smallest hashes of (seed, image_id): a seeded subset."""
    keyed = labeled.withColumn("_h", F.xxhash64(F.lit(seed), F.lit("subset"), "image_id"))
    ranked = number_rows(keyed, ["_h", "image_id"], F.shiftright(F.col("_h"), 52), "_rank")
    return ranked.filter(F.col("_rank") < n).drop("_h", "_rank")


def write_index(spark, cfg: ResampleConfig, out: str, first, draw, n_files: int) -> SampleIndexMeta:
    """OUT/index/ (schemas/sample_index.py): each epoch's samples bound to stored images of
    cfg.shards; samples of rejected images are dropped and counted."""
    where = f"{cfg.shards}/{SHARD_SET_FILE}"
    shard_set_text = read_text(spark, where)
    stored = ShardSetMeta.from_json(shard_set_text, where).images  # a shard set this code reads, whole
    images = (read_checked(spark, f"{cfg.shards}/images.parquet", schemas.SHARD_IMAGES)
              .select("image_id", F.col("image").alias("_stored"), "shard"))
    per_shard, kept, rejected = [], [], []
    for e in range(cfg.epochs):
        positions = (first if e == 0 else draw(epoch_seed(cfg.seed, e))[0]).select("position", "image_id")
        bound = positions.join(images, "image_id", "left").cache()
        ok = bound.filter(F.col("_stored").isNotNull())
        # file k holds stored images [k * R, (k + 1) * R): known ranges, no sampling pass
        (files_by_range(ok.select(F.col("_stored").alias("image"), "position"), "image", stored, n_files,
                        order=("position",)).write.parquet(f"{out}/{epoch_dir_name(e)}"))
        n_ok, n_bad = bound.agg(F.count("_stored"), F.sum(F.col("_stored").isNull().cast("long"))).first()
        kept.append(int(n_ok))
        rejected.append(int(n_bad or 0))
        per_shard.append(ok.groupBy("shard").agg(F.count("*").alias("samples")).withColumn("epoch", F.lit(e)))
        bound.unpersist()
    union = per_shard[0]
    for df in per_shard[1:]:
        union = union.unionByName(df)
    union.select("epoch", "shard", "samples").coalesce(1).write.parquet(f"{out}/{SHARD_SAMPLES}")
    meta = SampleIndexMeta(cfg.epochs, shard_set_sha256(shard_set_text), tuple(kept), tuple(rejected), cfg.shards,
                           tuple(epoch_seed(cfg.seed, e) for e in range(cfg.epochs)))
    write_text(spark, f"{out}/{INDEX_FILE}", meta.to_json())
    return meta


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ResampleConfig, argv, __doc__.splitlines()[0])
    with reported("resample"):
        stats = run(get_session("resample", cfg.master), cfg)
    print(f"resample: {stats['samples']} samples ({stats['splits']}) -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
