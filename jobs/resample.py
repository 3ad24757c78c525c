"""Head/tail resampled sample index of exactly M samples (SWAG section 3.1; WSL's strategies).

    spark-submit jobs/resample.py --labeled build/demo/labeled --out build/demo/samples \
        --samples 20000 [--alpha 0.7] [--strategy importance|sqrt|uniform|natural] [--seed 0]

importance (SWAG): round(alpha*M) draws with replacement from head images, p_i proportional to
the importance factor, the rest from tail images likewise. natural/sqrt/uniform (WSL): a hashtag
drawn with probability proportional to f, sqrt(f) or 1, then one of its images uniformly; alpha
does not apply. Writes OUT/samples.parquet (position-ordered; its labels column carries the class
count recorded in labeled.parquet) and OUT/stats.json, atomically.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

import schemas  # noqa: E402
from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.output import atomic_output, write_json  # noqa: E402
from jobs.lib.resampling import draw_counts, fixed_point_buckets, sampling_weights, shuffled_positions  # noqa: E402
from jobs.lib.session import get_session, input_bytes, tune_session  # noqa: E402
from jobs.lib.tables import check_label_range, class_count, read_checked, with_class_count  # noqa: E402
from pipeline.sampling import ALL, STRATEGIES, bucket_count, split_sizes  # noqa: E402


@dataclass(frozen=True)
class ResampleConfig:
    labeled: str = field(metadata={"help": "output directory of jobs/label.py"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    samples: int = field(metadata={"help": "M, the exact number of samples"})
    alpha: float = field(default=0.7, metadata={"help": "share of samples drawn from head images"})
    strategy: str = field(default="importance", metadata={"help": "|".join(STRATEGIES)})
    seed: int = field(default=0, metadata={"help": "seed of the draw and the shuffle"})
    rows_per_bucket: int = field(default=200_000, metadata={"help": "logical bucket size (memory bound)"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's)"})

    def __post_init__(self):
        split_sizes(self.samples, self.alpha)  # validates M > 0 and alpha in [0, 1]
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown --strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.rows_per_bucket < 1:
            raise ValueError("--rows-per-bucket must be >= 1")


def run(spark, cfg: ResampleConfig) -> dict:
    where = f"{cfg.labeled}/labeled.parquet"
    table = read_checked(spark, where, schemas.LABELED.remove(1))
    tune_session(spark, input_bytes(spark, where))
    num_classes, vocabulary = class_count(table, where)  # carried into samples.parquet for the shards
    check_label_range(table.select("labels"), num_classes, where, vocabulary)
    # the draw reads only what it weighs; the images' other columns are read once, by the final join
    needs = ["image_id", "tail", "importance"] if cfg.strategy == "importance" else ["image_id", "labels"]
    labeled = table.select(*needs).cache()
    n_images = labeled.count()
    sizes = split_sizes(cfg.samples, cfg.alpha) if cfg.strategy == "importance" else {ALL: cfg.samples}
    buckets = fixed_point_buckets(sampling_weights(labeled, cfg.strategy), bucket_count(n_images, cfg.rows_per_bucket))
    counts, _ = draw_counts(buckets, sizes, cfg.seed)
    counts = counts.cache()
    copies = counts.select("image_id", F.explode(F.sequence(F.lit(0).cast("long"), F.col("count") - 1)).alias("copy"))
    samples = with_class_count(shuffled_positions(copies, cfg.samples, cfg.seed)
                               .join(table.select("image_id", "image", "labels", "tail"), "image_id")
                               .select("position", "image_id", "image", "labels", "tail"), num_classes, vocabulary)
    n_files = max(1, cfg.samples // 1_000_000)
    with atomic_output(spark, cfg.out) as tmp:
        (samples.repartitionByRange(n_files, "position").sortWithinPartitions("position")
         .write.parquet(f"{tmp}/samples.parquet"))
        per = {r["split"]: (r["unique"], r["samples"]) for r in
               counts.groupBy("split").agg(F.count("*").alias("unique"), F.sum("count").alias("samples")).collect()}
        stats = {"labeled_images": n_images, "samples": cfg.samples, "splits": {
            s: {"samples": per.get(s, (0, 0))[1] or 0, "unique_images": per.get(s, (0, 0))[0],
                "duplication_factor": (per[s][1] / per[s][0]) if per.get(s, (0, 0))[0] else None}
            for s in sizes}, "config": vars(cfg)}
        total = sum(v["samples"] for v in stats["splits"].values())
        if total != cfg.samples:
            raise AssertionError(f"drew {total} samples, expected {cfg.samples}")
        write_json(spark, f"{tmp}/stats.json", stats)
    return stats


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ResampleConfig, argv, __doc__.splitlines()[0])
    stats = run(get_session("resample", cfg.master), cfg)
    print(f"resample: {cfg.samples} samples ({stats['splits']}) -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
