"""The dedup job's counts and its outputs: manifest, duplicates, stats, report and contact sheet."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.lib.output import _fs, atomic_output, write_json, write_text
from pipeline.dedup_report import contact_sheet, pick_pairs, report_markdown, thumbnail
from schemas import MANIFEST_ID, MANIFEST_IMAGE


def _by_set(df: DataFrame, *aggs) -> dict:
    return {r[0]: list(r[1:]) for r in df.groupBy("eval_set").agg(*aggs).collect()}


def dedup_stats(pre: DataFrame, ev: DataFrame, evals: DataFrame, cand: DataFrame, matches: DataFrame,
                removed: DataFrame, names: list[str], histogram_decimals: int = 0) -> dict:
    """Counts per side (images, unreadable by reason, matches), candidate and matched pairs; a
    handful of grouped queries, not one per number. `pre`/`ev` hold one row per variant of a
    readable image (reason null) or one per rejected image; the distance histogram's bins are
    distances rounded to `histogram_decimals` (0: Hamming bits; 2: cosine distance)."""
    images = _by_set(evals, F.count("*"))
    variants = _by_set(ev.filter(F.col("reason").isNull()), F.count("*"))
    matched = _by_set(matches, F.countDistinct("eval_id"), F.countDistinct("pretrain_id"))
    rejects = {n: {} for n in names}
    for r in ev.filter(F.col("reason").isNotNull()).groupBy("eval_set", "reason").count().collect():
        rejects[r["eval_set"]][r["reason"]] = r["count"]
    eval_stats = {n: {"images": images.get(n, [0])[0], "unreadable": rejects[n],
                      "unreadable_total": sum(rejects[n].values()), "variants": variants.get(n, [0])[0],
                      "matched_images": matched.get(n, [0, 0])[0], "matched_pretrain_images": matched.get(n, [0, 0])[1]}
                  for n in names}
    pre_rejects = {r["reason"]: r["count"] for r in
                   pre.filter(F.col("reason").isNotNull()).groupBy("reason").count().collect()}
    n_pre = pre.select(MANIFEST_ID).distinct().count()
    n_pre_ok = n_pre - sum(pre_rejects.values())
    n_eval_ok = sum(s["images"] - s["unreadable_total"] for s in eval_stats.values())
    n_cand = cand.count()
    cropped = F.col("crop") != F.array(*[F.lit(0.0).cast("float")] * 4)
    per_d = matches.groupBy(F.round("distance", histogram_decimals).alias("distance")).agg(F.count("*").alias("n"), F.sum(F.col("flipped").cast("int")).alias("f"),
                                            F.sum(cropped.cast("int")).alias("c")).collect()
    return {
        "pretrain": {"images": n_pre, "hashed": n_pre_ok, "unreadable": pre_rejects,
                     "unreadable_total": sum(pre_rejects.values())},
        "eval": eval_stats,
        "candidate_pairs": n_cand, "all_pairs": n_pre_ok * n_eval_ok,
        "candidate_share": n_cand / max(1, n_pre_ok * n_eval_ok),
        "matches": {"pairs": sum(r["n"] for r in per_d), "pretrain_images_removed": removed.count(),
                    "flipped_pairs": sum(r["f"] for r in per_d), "cropped_pairs": sum(r["c"] for r in per_d),
                    "distance_histogram": {_bin(r["distance"], histogram_decimals): r["n"] for r in sorted(per_d, key=lambda r: r[0])}},
    }


def _bin(d: float, decimals: int) -> int | str:
    return int(round(d)) if decimals == 0 else f"{d:.{decimals}f}"


def _sheet_rows(matches: DataFrame, manifest: DataFrame, evals: DataFrame, limit: int) -> tuple[list, list]:
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


def write_bytes(spark, path: str, data: bytes) -> None:
    p, fs = _fs(spark, path)
    stream = fs.create(p, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def write_outputs(spark, out: str, kept: DataFrame, matches: DataFrame, manifest: DataFrame, evals: DataFrame,
                  stats: dict, sheet_pairs: int, image_root: str | None) -> None:
    """OUT/{manifest,duplicates}.parquet, report.md, contact_sheet.png, stats.json (last)."""
    with atomic_output(spark, out) as tmp:
        kept.write.parquet(f"{tmp}/manifest.parquet")
        (matches.repartition(1).sortWithinPartitions("distance", "eval_set", "eval_id", "pretrain_id")
         .write.parquet(f"{tmp}/duplicates.parquet"))
        stats["rows_out"] = spark.read.parquet(f"{tmp}/manifest.parquet").count()
        closest, farthest = _sheet_rows(matches, manifest, evals, sheet_pairs) if sheet_pairs else ([], [])
        if closest:
            def load(image):
                return thumbnail(image, image_root)
            write_bytes(spark, f"{tmp}/contact_sheet.png", contact_sheet(closest + farthest, load))
        write_text(spark, f"{tmp}/report.md", report_markdown(stats, closest, farthest))
        write_json(spark, f"{tmp}/stats.json", stats)
