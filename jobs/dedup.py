"""Remove near-duplicates of evaluation images from a pretraining manifest (WSL section 3).

    spark-submit jobs/dedup.py --manifest build/demo/manifest.parquet \
        --eval build/demo/heldout.parquet [--eval DIR_OR_MANIFEST ...] --out build/demo/dedup \
        [--method phash] [--threshold 6] [--bands B] [--max-crop 0.1 --crop-steps 3] [--no-flips]
    ... --method embedding --model build/demo/pretrain/export [--threshold 0.1] [--tables 64 --table-bits 16]

Writes OUT/manifest.parquet (the input manifest without matched images, same columns),
OUT/duplicates.parquet, OUT/stats.json, OUT/report.md and OUT/contact_sheet.png, atomically.
An evaluation source is a manifest (Parquet / JSON Lines with image_id and image) or a folder of
images; unreadable images on either side are counted by reason, never fatal.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.faults import reported  # noqa: E402
from jobs.lib import dedup_embed  # noqa: E402
from jobs.lib.dedup import candidate_pairs, eval_set_names, hash_images, pair_correlations, read_eval_source  # noqa: E402
from jobs.lib.dedup_output import dedup_stats, write_outputs  # noqa: E402
from jobs.lib.manifest import read_manifest  # noqa: E402
from jobs.lib.session import get_session  # noqa: E402
from pipeline.lsh import Banding, default_bands  # noqa: E402
from pipeline.pair_check import MIN_CORRELATION  # noqa: E402
from pipeline.phash import BITS, MIN_SET_BITS, crop_grid  # noqa: E402
from pipeline.simhash import SimHashTables  # noqa: E402
from schemas import MANIFEST_ID, MANIFEST_IMAGE  # noqa: E402

METHODS = {"phash": "63-bit DCT perceptual hash, Hamming distance, banded candidates",
           "embedding": "frozen-trunk embedding, cosine distance, random-hyperplane LSH candidates"}
DEFAULT_THRESHOLD = {"phash": 6, "embedding": 0.1}
DEFAULT_CROP_STEPS = {"phash": 3, "embedding": 1}  # embeddings move less under a crop than pHash bits do


@dataclass(frozen=True)
class DedupConfig:
    manifest: str = field(metadata={"help": "pretraining manifest, Parquet or JSON Lines"})
    eval: tuple[str, ...] = field(metadata={"help": "evaluation manifests or image folders (repeat or comma-separate)"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    method: str = field(default="phash", metadata={"help": f"one of {sorted(METHODS)}"})
    threshold: float | None = field(default=None, metadata={
        "help": f"largest distance that matches: Hamming bits of 63 (phash, default {DEFAULT_THRESHOLD['phash']}) "
                f"or cosine distance 1 - cos (embedding, default {DEFAULT_THRESHOLD['embedding']})"})
    bands: int | None = field(default=None, metadata={"help": "phash: LSH bands (default threshold+1: exact lookups)"})
    model: str | None = field(default=None, metadata={
        "help": "embedding: an export directory of trainer.pretrain, or random:<timm name>"})
    img_size: int | None = field(default=None, metadata={"help": "embedding: input resolution (default: the export's, else 224)"})
    tables: int = field(default=SimHashTables.tables, metadata={"help": "embedding: LSH tables (a shared key in any -> candidate)"})
    table_bits: int = field(default=SimHashTables.bits, metadata={"help": "embedding: sign bits per LSH key"})
    lsh_seed: int = field(default=0, metadata={"help": "embedding: seed of the random hyperplanes"})
    max_crop: float = field(default=0.1, metadata={"help": "evaluation images are also hashed cropped by up to this"})
    crop_steps: int | None = field(default=None, metadata={
        "help": "crop grid steps per side pair (0: no crop variants; default 3 for phash, 1 for embedding)"})
    flips: bool = field(default=True, metadata={"help": "also match mirrored evaluation images"})
    min_correlation: float = field(default=MIN_CORRELATION, metadata={
        "help": "a pair within the threshold must also have aligned 16x16 luma thumbnails correlated this much "
                "(pipeline/pair_check.py; -1: off)"})
    min_set_bits: int = field(default=MIN_SET_BITS, metadata={
        "help": "images whose hash has fewer 1 bits are counted as low_information, never matched"})
    image_root: str | None = field(default=None, metadata={"help": "resolve relative image paths against this"})
    sheet_pairs: int = field(default=24, metadata={"help": "pairs on the contact sheet"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's)"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown --method {self.method!r}; valid: {sorted(METHODS)}")
        if not self.eval:
            raise ValueError("--eval: give at least one evaluation manifest or image folder")
        if self.threshold is None:
            object.__setattr__(self, "threshold", DEFAULT_THRESHOLD[self.method])
        if self.crop_steps is None:
            object.__setattr__(self, "crop_steps", DEFAULT_CROP_STEPS[self.method])
        if self.method == "phash":
            self._check_phash()
        else:
            self._check_embedding()
        try:
            crop_grid(self.max_crop, self.crop_steps)  # raises on a bad grid
        except ValueError as e:
            raise ValueError(f"--max-crop {self.max_crop} --crop-steps {self.crop_steps}: {e}") from None
        if self.sheet_pairs < 0:
            raise ValueError("--sheet-pairs must be >= 0")
        if not -1.0 <= self.min_correlation <= 1.0:
            raise ValueError(f"--min-correlation must be in [-1, 1], got {self.min_correlation}")

    def _check_phash(self):
        if self.threshold != int(self.threshold) or not 0 <= self.threshold < BITS // 2:
            raise ValueError(f"--threshold must be a whole number of bits in [0, {BITS // 2}) for phash, got {self.threshold}")
        object.__setattr__(self, "threshold", int(self.threshold))
        if self.bands is not None and not 1 <= self.bands <= BITS:
            raise ValueError(f"--bands must be in [1, {BITS}], got {self.bands}")
        if self.bands is not None and self.threshold // self.bands > 3:
            raise ValueError(f"--bands {self.bands} needs probe radius {self.threshold // self.bands} > 3: use more bands")
        for name in ("model", "img_size"):
            if getattr(self, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} is for --method embedding")

    def _check_embedding(self):
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"--threshold is a cosine distance 1 - cos for embedding, in [0, 1), got {self.threshold}")
        if self.model is None:
            raise ValueError("--method embedding needs --model: an export directory of trainer.pretrain "
                             "or random:<timm name> (nothing is downloaded)")
        if self.bands is not None:
            raise ValueError("--bands is for --method phash; the embedding index takes --tables/--table-bits")
        if self.img_size is not None and self.img_size < 16:
            raise ValueError(f"--img-size must be >= 16, got {self.img_size}")
        try:
            SimHashTables(self.tables, self.table_bits, self.lsh_seed)  # raises on bad sizes
        except ValueError as e:
            raise ValueError(f"--tables {self.tables} --table-bits {self.table_bits}: {e}") from None

    def embedding_img_size(self) -> int:
        """--img-size, else the export's training resolution, else 224."""
        if self.img_size is not None:
            return self.img_size
        if self.model.startswith("random:"):
            return 224
        from trainer.export import read_export_meta

        return int(read_export_meta(self.model)["img_size"])


def run(spark, cfg: DedupConfig) -> dict:
    crops = crop_grid(cfg.max_crop, cfg.crop_steps)
    manifest = read_manifest(spark, cfg.manifest)
    names = eval_set_names(cfg.eval)
    sources = [read_eval_source(spark, p, n) for p, n in zip(cfg.eval, names)]
    evals = sources[0]
    for s in sources[1:]:
        evals = evals.unionByName(s)
    evals = evals.dropDuplicates(["eval_set", MANIFEST_ID]).cache()

    # decoding is the cost: spread it over every core even when the table of paths is tiny
    parts = max(4 * spark.sparkContext.defaultParallelism, manifest.rdd.getNumPartitions())
    pre_images = manifest.select(MANIFEST_ID, MANIFEST_IMAGE).dropDuplicates([MANIFEST_ID]).repartition(parts)
    ev_images = evals.repartition(4 * spark.sparkContext.defaultParallelism)
    pre, ev, cand, method = (_phash if cfg.method == "phash" else _embedding)(cfg, crops, pre_images, ev_images)
    crop_col = F.element_at(F.array(*[F.array(*[F.lit(float(c)).cast("float") for c in box]) for box in crops]),
                            F.col("variant") + 1)
    within = (cand.filter(F.col("distance") <= cfg.threshold).withColumn("crop", crop_col)
              .select("pretrain_id", "eval_set", "eval_id", F.col("distance").cast("float"), "flipped", "crop",
                      F.col("band").cast("int")))
    check_crops = crop_grid(cfg.max_crop, max(cfg.crop_steps, DEFAULT_CROP_STEPS["phash"])) if cfg.crop_steps else crops
    checked = pair_correlations(within, pre_images, evals, check_crops, cfg.image_root).cache()
    off = cfg.min_correlation <= -1.0
    matches = (checked if off else checked.filter(F.col("correlation") >= cfg.min_correlation)).cache()
    removed = matches.select(F.col("pretrain_id").alias(MANIFEST_ID)).distinct()
    kept = manifest.join(removed, MANIFEST_ID, "left_anti").select(*manifest.columns)

    stats = dedup_stats(pre, ev, evals, cand, matches, removed, names, 0 if cfg.method == "phash" else 2)
    n_within, n_unreadable = checked.agg(F.count("*"), F.sum(F.col("correlation").isNull().cast("int"))).first()
    stats["pair_check"] = {"min_correlation": cfg.min_correlation, "pairs_within_threshold": n_within,
                           "rejected": n_within - stats["matches"]["pairs"], "unreadable_on_recheck": n_unreadable or 0}
    stats.update({"manifest": cfg.manifest, "eval_sources": dict(zip(names, cfg.eval)),
                  "eval_variants_per_image": len(crops) * (2 if cfg.flips else 1), "method": method,
                  "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}})
    write_outputs(spark, cfg.out, kept, matches, manifest, evals, stats, cfg.sheet_pairs, cfg.image_root)
    return stats


def _phash(cfg: DedupConfig, crops, pre_images, ev_images):
    banding = Banding(cfg.threshold, cfg.bands or default_bands(cfg.threshold))
    pre = hash_images(pre_images, [MANIFEST_ID], crops[:1], False, cfg.image_root, cfg.min_set_bits).cache()
    ev = hash_images(ev_images, ["eval_set", MANIFEST_ID], crops, cfg.flips, cfg.image_root, cfg.min_set_bits).cache()
    cand = candidate_pairs(pre.filter(F.col("hash").isNotNull()), ev.filter(F.col("hash").isNotNull()), banding)
    method = {"name": "phash", "rule": f"Hamming distance <= {cfg.threshold} of {BITS} bits",
              "index": f"{banding.bands} bands, probe radius {banding.radius}",
              "bands": banding.bands, "radius": banding.radius, "spans": banding.spans(),
              "probes_per_eval_hash": banding.probes_per_hash()}
    return pre, ev, cand.cache(), method


def _embedding(cfg: DedupConfig, crops, pre_images, ev_images):
    size = cfg.embedding_img_size()
    tables = SimHashTables(cfg.tables, cfg.table_bits, cfg.lsh_seed)
    pre = dedup_embed.embed_images(pre_images, [MANIFEST_ID], crops[:1], False, cfg.model, size,
                                   cfg.image_root, cfg.min_set_bits).cache()
    ev = dedup_embed.embed_images(ev_images, ["eval_set", MANIFEST_ID], crops, cfg.flips, cfg.model, size,
                                  cfg.image_root, cfg.min_set_bits).cache()
    mean = dedup_embed.mean_embedding(pre, ev)
    cand = dedup_embed.candidate_pairs(dedup_embed.lsh_keys(pre, mean, tables), dedup_embed.lsh_keys(ev, mean, tables))
    method = {"name": "embedding", "model": cfg.model, "img_size": size, "dim": int(len(mean)),
              "rule": f"cosine distance of mean-centred embeddings <= {cfg.threshold}",
              "index": f"{tables.tables} SimHash tables of {tables.bits} bits",
              "tables": tables.tables, "table_bits": tables.bits,
              "candidate_probability_at_threshold": round(tables.collision_probability(1.0 - cfg.threshold), 4)}
    return pre, ev, cand.cache(), method


def merge_repeated(argv: list[str], flag: str) -> list[str]:
    """`--eval A --eval B` -> `--eval A,B` (argparse would keep only the last)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
            i += 2
            continue
        if a.startswith(flag + "="):
            values.append(a[len(flag) + 1:])
        else:
            rest.append(a)
        i += 1
    return rest + ([flag, ",".join(values)] if values else [])


def main(argv: list[str] | None = None) -> dict:
    argv = merge_repeated(sys.argv[1:] if argv is None else list(argv), "--eval")
    cfg = parse_config(DedupConfig, argv, __doc__.splitlines()[0])
    with reported("dedup"):
        stats = run(get_session("dedup", cfg.master), cfg)
    m = stats["matches"]
    print(f"dedup: {m['pretrain_images_removed']} of {stats['pretrain']['images']} pretraining images match "
          f"{sum(s['matched_images'] for s in stats['eval'].values())} evaluation images "
          f"({m['pairs']} pairs, {m['flipped_pairs']} through flips; {stats['candidate_pairs']} candidate pairs) -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
