"""Remove near-duplicates of evaluation images from a pretraining manifest (WSL section 3).

    spark-submit jobs/dedup.py --manifest build/demo/manifest.parquet \
        --eval build/demo/heldout.parquet [--eval DIR_OR_MANIFEST ...] --out build/demo/dedup \
        [--method phash] [--threshold 6] [--max-crop 0.1 --crop-steps 3] [--no-flips] \
        [--index auto|flat|hnsw] [--neighbours 21] [--inspect 24]
    ... --method rmac --model build/demo/pretrain/export [--whiten] [--threshold T]
    ... --method embedding --model random:resnet18 [--threshold 0.1]

The evaluation images (the small side), at their crop/mirror variants, go into a faiss index built
once on the driver and broadcast; each pretraining partition decodes its images once and queries
their nearest evaluation variants in mapInArrow (the dedup package: dedup/spark.py holds the
transforms; this file reads the inputs and writes the outputs). Writes, atomically:
OUT/manifest.parquet (the input manifest without matched images, same columns),
OUT/duplicates.parquet, OUT/neighbours.parquet (each evaluation image's --neighbours nearest
pretraining images, WSL's inspection lists), OUT/stats.json, OUT/report.md, OUT/contact_sheet.png
and OUT/inspect/*.png (per-evaluation-image sheets of its nearest neighbours). An evaluation source
is a manifest (Parquet / JSON Lines with image_id and image) or a folder of images; unreadable
images on either side are counted by reason, never fatal.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from dedup.config import DedupConfig, eval_set_names  # noqa: E402
from dedup.report import contact_sheet, neighbour_sheet, report_markdown, thumbnail  # noqa: E402
from dedup.spark import Found, find_duplicates, inspect_rows, sheet_rows, union_eval_sources  # noqa: E402
from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.errors import reported  # noqa: E402
from jobs.lib.manifest import ManifestError, manifest_format, read_manifest  # noqa: E402
from jobs.lib.output import atomic_output, write_bytes, write_json, write_text  # noqa: E402
from jobs.lib.session import get_session  # noqa: E402
from pipeline.images import IMAGE_SUFFIXES as SUFFIX_FORMATS  # noqa: E402
from schemas import MANIFEST_ID, MANIFEST_IMAGE  # noqa: E402

IMAGE_SUFFIXES = tuple(SUFFIX_FORMATS)  # the decoder's: an image folder lists what it may decode


def run(spark, cfg: DedupConfig) -> dict:
    manifest = read_manifest(spark, cfg.manifest)
    evals = union_eval_sources([read_eval_source(spark, p, n) for p, n in zip(cfg.eval, eval_set_names(cfg.eval))])
    found = find_duplicates(manifest, evals, cfg)
    write_outputs(spark, cfg, manifest, found)
    found.broadcast.unpersist()
    return found.stats


def read_eval_source(spark: SparkSession, path: str, name: str) -> DataFrame:
    """(eval_set, image_id, image) of a folder of images or a manifest with image_id and image."""
    if _is_image_dir(path):
        rows = _image_dir_rows(path)
        df = spark.createDataFrame(rows, f"{MANIFEST_ID} string, {MANIFEST_IMAGE} string")
    else:
        fmt = manifest_format(path)
        try:
            df = spark.read.parquet(path) if fmt == "parquet" else spark.read.json(path)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ManifestError(f"{path}: cannot read evaluation set as {fmt}: {first}") from None
        types = dict(df.dtypes)
        for col in (MANIFEST_ID, MANIFEST_IMAGE):
            if col not in types:
                raise ManifestError(f"{path}: missing required column {col!r} (columns: {sorted(types)})")
        if types[MANIFEST_ID] != "string" or types[MANIFEST_IMAGE] not in ("string", "binary"):
            raise ManifestError(f"{path}: columns image_id/image are {types[MANIFEST_ID]}/{types[MANIFEST_IMAGE]}, "
                                "expected string/string or binary")
    return df.select(F.lit(name).alias("eval_set"), MANIFEST_ID, MANIFEST_IMAGE)


def _is_image_dir(path: str) -> bool:
    """A local directory holding images, not a Parquet/JSON Lines dataset written by Spark."""
    if "://" in path and not path.startswith("file://"):
        return False
    p = Path(path.removeprefix("file://"))
    if not p.is_dir():
        return False
    entries = [e.name.lower() for e in p.iterdir()]
    return not any(e.endswith((".parquet", ".json", ".jsonl")) or e == "_success" for e in entries)


def _image_dir_rows(path: str) -> list[tuple[str, str]]:
    root = Path(path.removeprefix("file://")).resolve()
    rows = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_SUFFIXES):
                full = Path(d) / f
                rows.append((full.relative_to(root).as_posix(), str(full)))
    if not rows:
        raise ManifestError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) and no manifest")
    return rows


def write_outputs(spark, cfg: DedupConfig, manifest: DataFrame, found: Found) -> None:
    """OUT/{manifest,duplicates,neighbours}.parquet, report.md, contact_sheet.png, inspect/*.png,
    stats.json (last)."""
    stats = found.stats
    with atomic_output(spark, cfg.out) as tmp:
        found.kept.write.parquet(f"{tmp}/manifest.parquet")
        (found.matches.repartition(1).sortWithinPartitions("distance", "eval_set", "eval_id", "pretrain_id")
         .write.parquet(f"{tmp}/duplicates.parquet"))
        (found.neighbours.repartition(1).sortWithinPartitions("eval_set", "eval_id", "rank")
         .write.parquet(f"{tmp}/neighbours.parquet"))
        stats["rows_out"] = spark.read.parquet(f"{tmp}/manifest.parquet").count()
        written = spark.read.parquet(f"{tmp}/neighbours.parquet")
        stats["neighbours"] = {"rows": written.count(), "eval_images": written.select("eval_set", "eval_id").distinct().count()}

        def load(image):
            return thumbnail(image, cfg.image_root)

        closest, farthest = (sheet_rows(found.matches, manifest, found.evals, cfg.sheet_pairs) if cfg.sheet_pairs
                             else ([], []))
        if closest:
            write_bytes(spark, f"{tmp}/contact_sheet.png", contact_sheet(closest + farthest, load))
        inspected = inspect_rows(written, manifest, found.evals, cfg.inspect) if cfg.inspect else []
        for j, e in enumerate(inspected):
            e["sheet"] = f"inspect/{j:03d}.png"
            write_bytes(spark, f"{tmp}/{e['sheet']}", neighbour_sheet(e, e["neighbours"], load))
        write_text(spark, f"{tmp}/report.md", report_markdown(stats, closest, farthest, inspected))
        write_json(spark, f"{tmp}/stats.json", stats)


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
