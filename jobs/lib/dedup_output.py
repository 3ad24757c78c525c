"""The dedup job's counts and its outputs: manifest, duplicates, stats, report and contact sheet."""
from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.lib.output import _fs, atomic_output, write_json, write_text
from pipeline.dedup_report import contact_sheet, neighbour_sheet, pick_pairs, report_markdown, thumbnail
from schemas import MANIFEST_ID, MANIFEST_IMAGE


def _eval_side(ev_table: pa.Table, names: list[str]) -> dict:
    """Per evaluation set: images, unreadable by reason, variants, from the collected descriptors
    (every evaluation image has at least one row: its variants, or its reason)."""
    out = {n: {"images": 0, "unreadable": {}, "unreadable_total": 0, "variants": 0} for n in names}
    seen = set()
    for s, i, reason in zip(ev_table.column("eval_set").to_pylist(), ev_table.column(MANIFEST_ID).to_pylist(),
                            ev_table.column("reason").to_pylist()):
        o = out[s]
        if reason is None:
            o["variants"] += 1
        else:
            o["unreadable"][reason] = o["unreadable"].get(reason, 0) + 1
            o["unreadable_total"] += 1
        if (s, i) not in seen:
            seen.add((s, i))
            o["images"] += 1
    return out


def dedup_stats(queried: DataFrame, ev_table: pa.Table, matches: DataFrame, removed: DataFrame,
                names: list[str], histogram_decimals: int = 0) -> dict:
    """Counts per side (images, unreadable by reason, matches) and of the matched pairs; a handful
    of grouped queries, not one per number. `queried` holds one row per pretraining image (its
    reason, or its nearest evaluation images); the distance histogram's bins are distances
    rounded to `histogram_decimals` (0: Hamming bits; 2: cosine distance)."""
    eval_stats = _eval_side(ev_table, names)
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
                    "distance_histogram": {_bin(r["distance"], histogram_decimals): r["n"]
                                           for r in sorted(per_d, key=lambda r: r[0])}},
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


def _inspect_rows(neighbours: DataFrame, manifest: DataFrame, evals: DataFrame, n: int) -> list[dict]:
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


def write_outputs(spark, out: str, kept: DataFrame, matches: DataFrame, neighbours: DataFrame, manifest: DataFrame,
                  evals: DataFrame, stats: dict, sheet_pairs: int, inspect: int, image_root: str | None) -> None:
    """OUT/{manifest,duplicates,neighbours}.parquet, report.md, contact_sheet.png, inspect/*.png,
    stats.json (last)."""
    with atomic_output(spark, out) as tmp:
        kept.write.parquet(f"{tmp}/manifest.parquet")
        (matches.repartition(1).sortWithinPartitions("distance", "eval_set", "eval_id", "pretrain_id")
         .write.parquet(f"{tmp}/duplicates.parquet"))
        (neighbours.repartition(1).sortWithinPartitions("eval_set", "eval_id", "rank")
         .write.parquet(f"{tmp}/neighbours.parquet"))
        stats["rows_out"] = spark.read.parquet(f"{tmp}/manifest.parquet").count()
        written = spark.read.parquet(f"{tmp}/neighbours.parquet")
        stats["neighbours"] = {"rows": written.count(), "eval_images": written.select("eval_set", "eval_id").distinct().count()}

        def load(image):
            return thumbnail(image, image_root)

        closest, farthest = _sheet_rows(matches, manifest, evals, sheet_pairs) if sheet_pairs else ([], [])
        if closest:
            write_bytes(spark, f"{tmp}/contact_sheet.png", contact_sheet(closest + farthest, load))
        inspected = _inspect_rows(written, manifest, evals, inspect) if inspect else []
        for j, e in enumerate(inspected):
            e["sheet"] = f"inspect/{j:03d}.png"
            write_bytes(spark, f"{tmp}/{e['sheet']}", neighbour_sheet(e, e["neighbours"], load))
        write_text(spark, f"{tmp}/report.md", report_markdown(stats, closest, farthest, inspected))
        write_json(spark, f"{tmp}/stats.json", stats)
