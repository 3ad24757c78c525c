"""Remove near-duplicates of evaluation images from a pretraining manifest (WSL section 3).

    spark-submit jobs/dedup.py --manifest build/demo/manifest.parquet \
        --eval build/demo/heldout.parquet [--eval DIR_OR_MANIFEST ...] --out build/demo/dedup \
        [--method phash] [--threshold 6] [--max-crop 0.1 --crop-steps 3] [--no-flips] \
        [--index auto|flat|hnsw] [--neighbours 21] [--inspect 24]
    ... --method rmac --model build/demo/pretrain/export [--whiten] [--threshold T]
    ... --method embedding --model random:resnet18 [--threshold 0.1]

The evaluation images (the small side), at their crop/mirror variants, go into a faiss index built
once on the driver and broadcast; each pretraining partition decodes its images once and queries
their nearest evaluation variants in mapInArrow (jobs/lib/dedup_index.py). Writes, atomically:
OUT/manifest.parquet (the input manifest without matched images, same columns),
OUT/duplicates.parquet, OUT/neighbours.parquet (each evaluation image's --neighbours nearest
pretraining images, WSL's inspection lists), OUT/stats.json, OUT/report.md, OUT/contact_sheet.png
and OUT/inspect/*.png (per-evaluation-image sheets of its nearest neighbours). An evaluation source
is a manifest (Parquet / JSON Lines with image_id and image) or a folder of images; unreadable
images on either side are counted by reason, never fatal.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.dedup import eval_set_names, pair_correlations, read_eval_source  # noqa: E402
from jobs.lib.dedup_describe import METHODS, Describer, describe_rows  # noqa: E402
from jobs.lib.dedup_index import EvalIndex, near_pairs, query_rows, top_neighbours  # noqa: E402
from jobs.lib.dedup_output import dedup_stats, write_outputs  # noqa: E402
from jobs.lib.errors import reported  # noqa: E402
from jobs.lib.manifest import read_manifest  # noqa: E402
from jobs.lib.session import get_session  # noqa: E402
from pipeline.ann import EF_SEARCH, INDEXES, IndexSpec  # noqa: E402
from pipeline.pair_check import MIN_CORRELATION  # noqa: E402
from pipeline.phash import BITS, MIN_SET_BITS, crop_grid  # noqa: E402
from schemas import MANIFEST_ID, MANIFEST_IMAGE  # noqa: E402

DEFAULT_THRESHOLD = {"phash": 6, "embedding": 0.1, "rmac": 0.02}  # rmac: measured on the constructed case (README)
DEFAULT_CROP_STEPS = {"phash": 3, "embedding": 1, "rmac": 1}  # descriptors move less under a crop than pHash bits do
TRANSFORM = {"phash": "none", "embedding": "centre", "rmac": "none"}  # rmac + --whiten: "whiten"


@dataclass(frozen=True)
class DedupConfig:
    manifest: str = field(metadata={"help": "pretraining manifest, Parquet or JSON Lines"})
    eval: tuple[str, ...] = field(metadata={"help": "evaluation manifests or image folders (repeat or comma-separate)"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    method: str = field(default="phash", metadata={"help": f"one of {sorted(METHODS)}"})
    threshold: float | None = field(default=None, metadata={
        "help": f"largest distance that matches: Hamming bits of 63 (phash, default {DEFAULT_THRESHOLD['phash']}) "
                f"or cosine distance 1 - cos (embedding, rmac; default {DEFAULT_THRESHOLD['rmac']})"})
    index: str = field(default="auto", metadata={
        "help": f"faiss index of the evaluation variants, one of {INDEXES}: flat (exact), hnsw (graph), "
                "auto (flat when the index or the manifest is small: pipeline.ann.IndexSpec.resolved)"})
    hnsw_m: int = field(default=IndexSpec.hnsw_m, metadata={"help": "HNSW graph degree"})
    ef_search: int | None = field(default=None, metadata={
        "help": f"HNSW search list length (default {EF_SEARCH['binary']} for phash, {EF_SEARCH['float']} otherwise)"})
    search_k: int = field(default=64, metadata={"help": "nearest evaluation variants read per pretraining image"})
    probe: int = field(default=8, metadata={
        "help": "nearest evaluation images kept per pretraining image (matches and neighbour lists come from these)"})
    neighbours: int = field(default=21, metadata={"help": "nearest pretraining images listed per evaluation image (WSL: 21)"})
    inspect: int = field(default=24, metadata={"help": "evaluation images with an inspection sheet of their neighbours"})
    model: str | None = field(default=None, metadata={
        "help": "embedding, rmac: an export directory of trainer.pretrain, or random:<timm name>"})
    img_size: int | None = field(default=None, metadata={"help": "embedding, rmac: input resolution (default: the export's, else 224)"})
    rmac_levels: int = field(default=3, metadata={"help": "rmac: scales of the region grid"})
    whiten: bool = field(default=False, metadata={"help": "rmac: PCA-whitening learned on the evaluation images"})
    whiten_dim: int | None = field(default=None, metadata={"help": "rmac --whiten: dimensions kept (default all)"})
    max_crop: float = field(default=0.1, metadata={"help": "evaluation images are also described cropped by up to this"})
    crop_steps: int | None = field(default=None, metadata={
        "help": "crop grid steps per side pair (0: no crop variants; default 3 for phash, 1 otherwise)"})
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
            self._check_trunk()
        try:
            crop_grid(self.max_crop, self.crop_steps)  # raises on a bad grid
        except ValueError as e:
            raise ValueError(f"--max-crop {self.max_crop} --crop-steps {self.crop_steps}: {e}") from None
        try:
            self.index_spec()
        except ValueError as e:
            raise ValueError(f"--index {self.index} --hnsw-m {self.hnsw_m} --ef-search {self.ef_search}: {e}") from None
        for name, lo in (("search_k", 1), ("probe", 1), ("neighbours", 1), ("inspect", 0), ("sheet_pairs", 0)):
            if getattr(self, name) < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {lo}, got {getattr(self, name)}")
        if self.probe > self.search_k:
            raise ValueError(f"--probe {self.probe} must be <= --search-k {self.search_k}")
        if not -1.0 <= self.min_correlation <= 1.0:
            raise ValueError(f"--min-correlation must be in [-1, 1], got {self.min_correlation}")

    def _check_phash(self):
        if self.threshold != int(self.threshold) or not 0 <= self.threshold < BITS // 2:
            raise ValueError(f"--threshold must be a whole number of bits in [0, {BITS // 2}) for phash, got {self.threshold}")
        object.__setattr__(self, "threshold", int(self.threshold))
        for name in ("model", "img_size", "whiten_dim"):
            if getattr(self, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} is for --method embedding or rmac")
        if self.whiten:
            raise ValueError("--whiten is for --method rmac")

    def _check_trunk(self):
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"--threshold is a cosine distance 1 - cos for {self.method}, in [0, 1), got {self.threshold}")
        if self.model is None:
            raise ValueError(f"--method {self.method} needs --model: an export directory of trainer.pretrain "
                             "or random:<timm name> (nothing is downloaded)")
        if self.img_size is not None and self.img_size < 16:
            raise ValueError(f"--img-size must be >= 16, got {self.img_size}")
        if self.method != "rmac" and (self.whiten or self.whiten_dim is not None):
            raise ValueError("--whiten / --whiten-dim are for --method rmac")
        if self.whiten_dim is not None and self.whiten_dim < 1:
            raise ValueError(f"--whiten-dim must be >= 1, got {self.whiten_dim}")
        if not 1 <= self.rmac_levels <= 6:
            raise ValueError(f"--rmac-levels must be in [1, 6], got {self.rmac_levels}")

    def index_spec(self) -> IndexSpec:
        return IndexSpec("binary" if self.method == "phash" else "float", self.index, self.hnsw_m,
                         ef_search=self.ef_search)

    def describer(self) -> Describer:
        if self.method == "phash":
            return Describer("phash")
        return Describer(self.method, self.model, self.embedding_img_size(), self.rmac_levels)

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
    describer = cfg.describer()
    manifest = read_manifest(spark, cfg.manifest)
    names = eval_set_names(cfg.eval)
    sources = [read_eval_source(spark, p, n) for p, n in zip(cfg.eval, names)]
    evals = sources[0]
    for s in sources[1:]:
        evals = evals.unionByName(s)
    evals = evals.dropDuplicates(["eval_set", MANIFEST_ID]).cache()

    # decoding is the cost: spread it over every core even when the table of paths is tiny
    parallel = spark.sparkContext.defaultParallelism
    parts = max(4 * parallel, manifest.rdd.getNumPartitions())
    pre_images = manifest.select(MANIFEST_ID, MANIFEST_IMAGE).dropDuplicates([MANIFEST_ID]).repartition(parts)

    # the small side: described on the executors, collected, indexed once, broadcast
    t0 = time.perf_counter()
    ev_table = describe_rows(evals.repartition(4 * parallel), ["eval_set", MANIFEST_ID], MANIFEST_IMAGE, describer,
                             crops, cfg.flips, cfg.image_root, cfg.min_set_bits).toArrow()
    t1 = time.perf_counter()
    transform = "whiten" if cfg.whiten else TRANSFORM[cfg.method]
    queries = manifest.count() if cfg.index == "auto" else None  # rows (>= images): flat or HNSW, which costs less
    eidx = EvalIndex.build(ev_table, cfg.index_spec(), transform, cfg.whiten_dim, queries=queries)
    t2 = time.perf_counter()
    shipped = eidx.shipped()
    bc = spark.sparkContext.broadcast(shipped)
    images = F.broadcast(eidx.images_table(spark))

    # the large side: each partition decodes, describes and searches its own images
    queried = query_rows(pre_images, MANIFEST_ID, MANIFEST_IMAGE, describer, bc, cfg.probe, cfg.search_k,
                         cfg.image_root, cfg.min_set_bits).cache()
    pairs = near_pairs(queried)
    crop_col = F.element_at(F.array(*[F.array(*[F.lit(float(c)).cast("float") for c in box]) for box in crops]),
                            F.col("variant") + 1)
    within = (pairs.filter(F.col("distance") <= cfg.threshold).join(images, "eval_index").withColumn("crop", crop_col)
              .select("pretrain_id", "eval_set", "eval_id", F.col("distance").cast("float"), "flipped", "crop"))
    check_crops = crop_grid(cfg.max_crop, max(cfg.crop_steps, DEFAULT_CROP_STEPS["phash"])) if cfg.crop_steps else crops
    checked = pair_correlations(within, pre_images, evals, check_crops, cfg.image_root).cache()
    off = cfg.min_correlation <= -1.0
    matches = (checked if off else checked.filter(F.col("correlation") >= cfg.min_correlation)).cache()
    removed = matches.select(F.col("pretrain_id").alias(MANIFEST_ID)).distinct()
    kept = manifest.join(removed, MANIFEST_ID, "left_anti").select(*manifest.columns)
    matched_key = matches.select("pretrain_id", "eval_set", "eval_id", F.lit(True).alias("matched"))
    neighbours = (top_neighbours(pairs, cfg.neighbours).join(images, "eval_index").withColumn("crop", crop_col)
                  .join(matched_key, ["pretrain_id", "eval_set", "eval_id"], "left")
                  .select("eval_set", "eval_id", "rank", "pretrain_id", F.col("distance").cast("float"), "flipped",
                          "crop", F.coalesce("matched", F.lit(False)).alias("matched")))

    stats = dedup_stats(queried, ev_table, matches, removed, names, 0 if cfg.method == "phash" else 2)
    n_within, n_unreadable = checked.agg(F.count("*"), F.sum(F.col("correlation").isNull().cast("int"))).first()
    stats["pair_check"] = {"min_correlation": cfg.min_correlation, "pairs_within_threshold": n_within,
                           "rejected": n_within - stats["matches"]["pairs"], "unreadable_on_recheck": n_unreadable or 0}
    rule = (f"Hamming distance <= {cfg.threshold} of {BITS} bits" if cfg.method == "phash"
            else f"cosine distance <= {cfg.threshold}")
    stats["method"] = {"name": cfg.method, "rule": rule, **({"model": cfg.model, "img_size": describer.img_size}
                                                           if cfg.method != "phash" else {}),
                       **({"rmac_levels": cfg.rmac_levels, "whiten": cfg.whiten} if cfg.method == "rmac" else {}),
                       "transform": transform}
    stats["index"] = {"kind": eidx.kind, "type": eidx.how, "variants": eidx.variants, "images": len(eidx.eval_id),
                      "bytes": int(shipped["index"].nbytes), "hnsw_m": cfg.hnsw_m, "ef_search": eidx.spec.ef_search,
                      "search_k": cfg.search_k, "probe": cfg.probe, "describe_eval_s": round(t1 - t0, 2),
                      "build_s": round(t2 - t1, 2),
                      "name": f"faiss {eidx.how} ({'Hamming' if eidx.kind == 'binary' else 'inner product'}) "
                              f"over {eidx.variants} evaluation variants"}
    stats.update({"manifest": cfg.manifest, "eval_sources": dict(zip(names, cfg.eval)),
                  "eval_variants_per_image": len(crops) * (2 if cfg.flips else 1),
                  "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}})
    write_outputs(spark, cfg.out, kept, matches, neighbours, manifest, evals, stats, cfg.sheet_pairs, cfg.inspect,
                  cfg.image_root)
    bc.unpersist()
    return stats


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
          f"({m['pairs']} pairs, {m['flipped_pairs']} through flips; {stats['index']['name']}) -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
