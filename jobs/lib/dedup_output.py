"""The dedup job's counts and its outputs: manifest, duplicates, stats, report and contact sheet."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.lib.output import _fs, atomic_output, write_json, write_text
from pipeline.dedup_report import contact_sheet, pick_pairs, report_markdown, thumbnail
from schemas import MANIFEST_ID, MANIFEST_IMAGE


def reject_counts(hashed: DataFrame) -> dict:
    return {r["reason"]: r["count"] for r in
            hashed.filter(F.col("reason").isNotNull()).groupBy("reason").count().collect()}


def dedup_stats(pre: DataFrame, ev: DataFrame, evals: DataFrame, cand: DataFrame, matches: DataFrame,
                removed: DataFrame, names: list[str]) -> dict:
    """Counts per side (images, unreadable by reason, matches), candidate and matched pairs."""
    eval_stats = {}
    for name in names:
        e = ev.filter(F.col("eval_set") == name)
        m = matches.filter(F.col("eval_set") == name)
        rejects = reject_counts(e)
        eval_stats[name] = {"images": evals.filter(F.col("eval_set") == name).count(),
                            "unreadable": rejects, "unreadable_total": sum(rejects.values()),
                            "variant_hashes": e.filter(F.col("hash").isNotNull()).count(),
                            "matched_images": m.select("eval_id").distinct().count(),
                            "matched_pretrain_images": m.select("pretrain_id").distinct().count()}
    pre_rejects = reject_counts(pre)
    n_pre = pre.select(MANIFEST_ID).distinct().count()
    n_pre_ok = n_pre - sum(pre_rejects.values())
    n_eval_ok = sum(s["images"] - s["unreadable_total"] for s in eval_stats.values())
    n_cand = cand.count()
    hist = {int(r["distance"]): r["count"] for r in matches.groupBy("distance").count().collect()}
    uncropped = F.array(*[F.lit(0.0).cast("float")] * 4)
    return {
        "pretrain": {"images": n_pre, "hashed": n_pre_ok, "unreadable": pre_rejects,
                     "unreadable_total": sum(pre_rejects.values())},
        "eval": eval_stats,
        "candidate_pairs": n_cand, "all_pairs": n_pre_ok * n_eval_ok,
        "candidate_share": n_cand / max(1, n_pre_ok * n_eval_ok),
        "matches": {"pairs": sum(hist.values()), "pretrain_images_removed": removed.count(),
                    "flipped_pairs": matches.filter("flipped").count(),
                    "cropped_pairs": matches.filter(F.col("crop") != uncropped).count(),
                    "distance_histogram": dict(sorted(hist.items()))},
    }


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
