"""Every DataFrame transform of the dedup job; jobs/dedup.py reads the inputs and writes the outputs.

`find_duplicates` is the job: the evaluation images (the small side) are described on the
executors, collected, indexed once on the driver (dedup/index.py) and broadcast; each
pretraining partition decodes, describes and searches its own images (`query_rows`); pairs within
the threshold are checked on their pixels (`pair_correlations`); `top_neighbours` keeps, for
every evaluation image, its k nearest pretraining images (WSL's k = 21 inspection lists). Each
task first reduces its own rows to k per evaluation image, so what crosses the shuffle is bounded
by (tasks x evaluation images hit x k), not by the manifest. The per-batch work is plain Arrow
and numpy in the other modules; this one only places it in mapInArrow, joins and aggregates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from dedup.config import DedupConfig, eval_set_names
from dedup.describe import DESCRIBED_DDL, Describer, described_batches
from dedup.index import QUERIED, EvalIndex, descriptor_query_batches, queried_batches, top_k_per_eval_image
from dedup.pair_check import correlated_batches
from dedup.phash import MIN_SET_BITS, Box
from dedup.report import eval_side_counts, histogram_bin, pick_pairs
from schemas import MANIFEST_ID, MANIFEST_IMAGE


@dataclass
class Found:
    """The job's results, as the outputs are written from them."""
    kept: DataFrame        # the manifest without matched images, its columns
    matches: DataFrame     # matched pairs (duplicates.parquet)
    neighbours: DataFrame  # each evaluation image's nearest pretraining images (neighbours.parquet)
    evals: DataFrame       # (eval_set, image_id, image) of every evaluation source
    stats: dict
    broadcast: object      # the shipped index: unpersist once the outputs are written


def union_eval_sources(sources: list[DataFrame]) -> DataFrame:
    """(eval_set, image_id, image) of every evaluation source, each image once per set, cached."""
    evals = sources[0]
    for s in sources[1:]:
        evals = evals.unionByName(s)
    return evals.dropDuplicates(["eval_set", MANIFEST_ID]).cache()


def find_duplicates(manifest: DataFrame, evals: DataFrame, cfg: DedupConfig) -> Found:
    """Matches of `manifest` images against `evals` (union_eval_sources) by cfg's method."""
    spark = manifest.sparkSession
    crops, describer, names = cfg.crops(), cfg.describer(), eval_set_names(cfg.eval)
    # decoding is the cost: spread it over every core even when the table of paths is tiny
    parallel = spark.sparkContext.defaultParallelism
    parts = max(4 * parallel, manifest.rdd.getNumPartitions())
    pre_images = manifest.select(MANIFEST_ID, MANIFEST_IMAGE).dropDuplicates([MANIFEST_ID]).repartition(parts)

    # the small side: described on the executors, collected, indexed once, broadcast
    t0 = time.perf_counter()
    ev_table = describe_rows(evals.repartition(4 * parallel), ["eval_set", MANIFEST_ID], MANIFEST_IMAGE, describer,
                             crops, cfg.flips, cfg.image_root, cfg.min_set_bits).toArrow()
    t1 = time.perf_counter()
    queries = manifest.count() if cfg.index == "auto" else None  # rows (>= images): flat or HNSW, which costs less
    eidx = EvalIndex.build(ev_table, cfg.index_spec(), cfg.transform(), cfg.whiten_dim, queries=queries)
    t2 = time.perf_counter()
    shipped = eidx.shipped()
    bc = spark.sparkContext.broadcast(shipped)
    images = F.broadcast(eval_images_frame(spark, eidx))

    # the large side: each partition decodes, describes and searches its own images
    queried = query_rows(pre_images, MANIFEST_ID, MANIFEST_IMAGE, describer, bc, cfg.probe, cfg.search_k,
                         cfg.image_root, cfg.min_set_bits).cache()
    pairs = neighbour_pairs(queried)
    crop_col = F.element_at(F.array(*[F.array(*[F.lit(float(c)).cast("float") for c in box]) for box in crops]),
                            F.col("variant") + 1)
    within = (pairs.filter(F.col("distance") <= cfg.threshold).join(images, "eval_index").withColumn("crop", crop_col)
              .select("pretrain_id", "eval_set", "eval_id", F.col("distance").cast("float"), "flipped", "crop"))
    checked = pair_correlations(within, pre_images, evals, cfg.check_crops(), cfg.image_root).cache()
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
    stats["method"] = {"name": cfg.method, "rule": cfg.rule(), **({"model": cfg.model, "img_size": describer.img_size}
                                                                 if cfg.method != "phash" else {}),
                       **({"rmac_levels": cfg.rmac_levels, "whiten": cfg.whiten} if cfg.method == "rmac" else {}),
                       "transform": cfg.transform()}
    stats["index"] = {"kind": eidx.kind, "type": eidx.how, "variants": eidx.variants, "images": len(eidx.eval_id),
                      "bytes": int(shipped["index"].nbytes), "hnsw_m": cfg.hnsw_m, "ef_search": eidx.spec.ef_search,
                      "search_k": cfg.search_k, "probe": cfg.probe, "describe_eval_s": round(t1 - t0, 2),
                      "build_s": round(t2 - t1, 2),
                      "name": f"faiss {eidx.how} ({'Hamming' if eidx.kind == 'binary' else 'inner product'}) "
                              f"over {eidx.variants} evaluation variants"}
    stats.update({"manifest": cfg.manifest, "eval_sources": dict(zip(names, cfg.eval)),
                  "eval_variants_per_image": len(crops) * (2 if cfg.flips else 1),
                  "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}})
    return Found(kept, matches, neighbours, evals, stats, bc)


def describe_rows(df: DataFrame, keys: list[str], image_col: str, describer: Describer, crops: list[Box],
                  flips: bool, image_root: str | None, min_set_bits: int = MIN_SET_BITS) -> DataFrame:
    """keys + (variant, flipped, hash, vector, reason, detail): one row per variant of each
    readable image (hash for phash, vector otherwise), one row with a reason per rejected one."""

    def fn(batches):
        yield from described_batches(batches, keys, image_col, describer, crops, flips, image_root, min_set_bits)

    ddl = ", ".join(f"`{k}` string" for k in keys) + ", " + DESCRIBED_DDL
    return df.select(*keys, image_col).mapInArrow(fn, ddl)


def eval_images_frame(spark: SparkSession, eidx: EvalIndex) -> DataFrame:
    """(eval_index, eval_set, eval_id) of the indexed evaluation images, as a small DataFrame."""
    return spark.createDataFrame(list(zip(range(len(eidx.eval_id)), eidx.eval_set, eidx.eval_id)),
                                 "eval_index int, eval_set string, eval_id string")


def query_rows(df: DataFrame, id_col: str, image_col: str, describer: Describer, broadcast, probe: int,
               k_variants: int, image_root: str | None, min_set_bits: int = MIN_SET_BITS) -> DataFrame:
    """(pretrain_id, reason, detail, nearest): per pretraining image, its `probe` nearest
    evaluation images (by their nearest variant among the `k_variants` nearest variants), or the
    reason it was not judged (unreadable, low_information) with nearest null."""

    def fn(batches):
        yield from queried_batches(batches, id_col, image_col, describer, broadcast.value, probe, k_variants,
                                   image_root, min_set_bits)

    return df.select(id_col, image_col).mapInArrow(fn, QUERIED)


def query_descriptors(df: DataFrame, id_col: str, descriptor_col: str, broadcast, probe: int,
                      k_variants: int) -> DataFrame:
    """query_rows for descriptors computed elsewhere (a `hash` bigint or `vector` array<float>
    column): the same search, without decoding (bench/dedup_bench.py times the job's search so)."""

    def fn(batches):
        yield from descriptor_query_batches(batches, id_col, descriptor_col, broadcast.value, probe, k_variants)

    return df.select(id_col, descriptor_col).mapInArrow(fn, QUERIED)


def neighbour_pairs(queried: DataFrame) -> DataFrame:
    """(pretrain_id, eval_index, variant, flipped, distance): one row per evaluation image that
    query_rows reported near a pretraining image (its `nearest` lists, exploded)."""
    return (queried.filter(F.col("nearest").isNotNull())
            .select("pretrain_id", F.explode("nearest").alias("n"))
            .select("pretrain_id", "n.eval_index", "n.variant", "n.flipped", "n.distance"))


def top_neighbours(pairs: DataFrame, k: int) -> DataFrame:
    """(eval_index, rank, pretrain_id, variant, flipped, distance): each evaluation image's k
    nearest pretraining images (rank 1 the nearest; ties by pretrain_id), from `neighbour_pairs`."""
    def local_top(batches):
        tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
        if tables:
            yield from top_k_per_eval_image(pa.concat_tables(tables), k).to_batches()

    local = pairs.mapInArrow(local_top, pairs.schema)
    w = Window.partitionBy("eval_index").orderBy("distance", "pretrain_id")
    return (local.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)
            .select("eval_index", F.col("rank").cast("int"), "pretrain_id", "variant", "flipped", "distance"))


def pair_correlations(pairs: DataFrame, pre_images: DataFrame, evals: DataFrame, crops: list[Box],
                      image_root: str | None) -> DataFrame:
    """`pairs` (pretrain_id, eval_set, eval_id, ..., flipped) + `correlation`: the best over `crops`
    of the aligned luma thumbnails (dedup/pair_check.py); null when an image cannot be read again."""
    pre = pre_images.select(F.col(MANIFEST_ID).alias("pretrain_id"), F.col(MANIFEST_IMAGE).alias("_pre_image"))
    ev = evals.select("eval_set", F.col(MANIFEST_ID).alias("eval_id"), F.col(MANIFEST_IMAGE).alias("_eval_image"))
    joined = pairs.join(pre, "pretrain_id").join(ev, ["eval_set", "eval_id"])
    fields = [(n, t) for n, t in joined.dtypes if n not in ("_pre_image", "_eval_image")]

    def fn(batches):
        yield from correlated_batches(batches, [n for n, _ in fields], crops, image_root)

    ddl = ", ".join(f"`{n}` {t}" for n, t in fields) + ", correlation float"
    return joined.mapInArrow(fn, ddl)


def dedup_stats(queried: DataFrame, ev_table: pa.Table, matches: DataFrame, removed: DataFrame,
                names: list[str], histogram_decimals: int = 0) -> dict:
    """Counts per side (images, unreadable by reason, matches) and of the matched pairs; a handful
    of grouped queries, not one per number. `queried` holds one row per pretraining image (its
    reason, or its nearest evaluation images); the distance histogram's bins are distances
    rounded to `histogram_decimals` (0: Hamming bits; 2: cosine distance)."""
    eval_stats = eval_side_counts(ev_table, names)
    for r in matches.groupBy("eval_set").agg(F.countDistinct("eval_id").alias("e"),
                                            F.countDistinct("pretrain_id").alias("p")).collect():
        eval_stats[r["eval_set"]].update(matched_images=r["e"], matched_pretrain_images=r["p"])
    for s in eval_stats.values():
        s.setdefault("matched_images", 0)
        s.setdefault("matched_pretrain_images", 0)
    pre_rows = queried.groupBy("reason").agg(F.count("*").alias("n"),
                                            F.sum(F.size(F.coalesce("nearest", F.array()))).alias("k")).collect()
    pre_rejects = {r["reason"]: r["n"] for r in pre_rows if r["reason"] is not None}
    n_pre = sum(r["n"] for r in pre_rows)
    cropped = F.col("crop") != F.array(*[F.lit(0.0).cast("float")] * 4)
    per_d = matches.groupBy(F.round("distance", histogram_decimals).alias("distance")).agg(
        F.count("*").alias("n"), F.sum(F.col("flipped").cast("int")).alias("f"),
        F.sum(cropped.cast("int")).alias("c")).collect()
    return {
        "pretrain": {"images": n_pre, "described": n_pre - sum(pre_rejects.values()), "unreadable": pre_rejects,
                     "unreadable_total": sum(pre_rejects.values())},
        "eval": eval_stats,
        "neighbour_pairs": sum(r["k"] or 0 for r in pre_rows),
        "matches": {"pairs": sum(r["n"] for r in per_d), "pretrain_images_removed": removed.count(),
                    "flipped_pairs": sum(r["f"] for r in per_d), "cropped_pairs": sum(r["c"] for r in per_d),
                    "distance_histogram": {histogram_bin(r["distance"], histogram_decimals): r["n"]
                                           for r in sorted(per_d, key=lambda r: r[0])}},
    }


def sheet_rows(matches: DataFrame, manifest: DataFrame, evals: DataFrame, limit: int) -> tuple[list, list]:
    """(closest, farthest) matched pairs for the contact sheet, with their images (pick_pairs)."""
    order = ["distance", "eval_set", "eval_id", "pretrain_id"]
    near = matches.orderBy(*order).limit(limit)
    far = matches.orderBy(*[F.col(c).desc() for c in order]).limit(limit // 2)
    pick = near.unionByName(far).distinct()
    pre_img = manifest.select(F.col(MANIFEST_ID).alias("pretrain_id"),
                              F.col(MANIFEST_IMAGE).alias("pretrain_image")).dropDuplicates(["pretrain_id"])
    ev_img = evals.select("eval_set", F.col(MANIFEST_ID).alias("eval_id"), F.col(MANIFEST_IMAGE).alias("eval_image"))
    rows = [r.asDict() for r in pick.join(pre_img, "pretrain_id").join(ev_img, ["eval_set", "eval_id"]).collect()]
    rows.sort(key=lambda r: tuple(r[c] for c in order))
    return pick_pairs(rows, limit)


def inspect_rows(neighbours: DataFrame, manifest: DataFrame, evals: DataFrame, n: int) -> list[dict]:
    """Up to n evaluation images where a person's judgement matters most, each with its neighbour
    rows: half the matched ones whose nearest match is farthest (borderline matches), half the
    unmatched ones whose nearest neighbour is closest (near misses)."""
    per_eval = neighbours.groupBy("eval_set", "eval_id").agg(F.max(F.col("matched").cast("int")).alias("m"),
                                                             F.min("distance").alias("nearest"))
    matched = per_eval.filter("m = 1").orderBy(F.desc("nearest"), "eval_set", "eval_id").limit(n - n // 2)
    missed = per_eval.filter("m = 0").orderBy("nearest", "eval_set", "eval_id").limit(n // 2)
    picks = matched.unionByName(missed).collect()
    if not picks:
        return []
    keys = neighbours.sparkSession.createDataFrame(
        [(r["eval_set"], r["eval_id"]) for r in picks], "eval_set string, eval_id string")
    pre_img = manifest.select(F.col(MANIFEST_ID).alias("pretrain_id"),
                              F.col(MANIFEST_IMAGE).alias("pretrain_image")).dropDuplicates(["pretrain_id"])
    ev_img = evals.select("eval_set", F.col(MANIFEST_ID).alias("eval_id"), F.col(MANIFEST_IMAGE).alias("eval_image"))
    rows = (neighbours.join(F.broadcast(keys), ["eval_set", "eval_id"]).join(pre_img, "pretrain_id")
            .join(F.broadcast(ev_img.join(F.broadcast(keys), ["eval_set", "eval_id"])), ["eval_set", "eval_id"])
            .collect())
    by_eval: dict = {}
    for r in rows:
        by_eval.setdefault((r["eval_set"], r["eval_id"]), []).append(r.asDict())
    out = []
    for p in picks:
        nb = sorted(by_eval.get((p["eval_set"], p["eval_id"]), []), key=lambda r: r["rank"])
        if nb:
            out.append({"eval_set": p["eval_set"], "eval_id": p["eval_id"], "eval_image": nb[0]["eval_image"],
                        "matched": sum(r["matched"] for r in nb), "nearest": p["nearest"], "neighbours": nb})
    return out
