"""DataFrame transforms of the dedup job: evaluation sources and the pixel check of matched pairs.

Describing images is jobs/lib/dedup_describe.py's, the index and its queries jobs/lib/dedup_index.py's.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lib.manifest import ManifestError, manifest_format
from pipeline.images import IMAGE_SUFFIXES as SUFFIX_FORMATS, ImageRejected, read_image_bytes
from pipeline.phash import Box, decode_rgb
from schemas import MANIFEST_ID, MANIFEST_IMAGE

IMAGE_SUFFIXES = tuple(SUFFIX_FORMATS)  # the decoder's: an image folder lists what it may decode


def eval_set_names(paths: tuple[str, ...]) -> list[str]:
    """A short, unique name per evaluation source: its file or folder name without suffix."""
    names = []
    for p in paths:
        base = Path(p.rstrip("/")).name.split(".")[0] or "eval"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


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


def pair_correlations(pairs: DataFrame, pre_images: DataFrame, evals: DataFrame, crops: list[Box],
                      image_root: str | None) -> DataFrame:
    """`pairs` (pretrain_id, eval_set, eval_id, ..., flipped) + `correlation`: the best over `crops`
    of the aligned luma thumbnails (pipeline/pair_check.py); null when an image cannot be read again."""
    pre = pre_images.select(F.col(MANIFEST_ID).alias("pretrain_id"), F.col(MANIFEST_IMAGE).alias("_pre_image"))
    ev = evals.select("eval_set", F.col(MANIFEST_ID).alias("eval_id"), F.col(MANIFEST_IMAGE).alias("_eval_image"))
    joined = pairs.join(pre, "pretrain_id").join(ev, ["eval_set", "eval_id"])
    fields = [(n, t) for n, t in joined.dtypes if n not in ("_pre_image", "_eval_image")]

    def fn(batches):
        from pipeline.pair_check import pair_correlation

        for b in batches:
            d = b.to_pydict()
            corr = []
            for pre_img, ev_img, flipped in zip(d["_pre_image"], d["_eval_image"], d["flipped"]):
                try:
                    corr.append(pair_correlation(decode_rgb(read_image_bytes(ev_img, image_root)),
                                                 decode_rgb(read_image_bytes(pre_img, image_root)),
                                                 crops, bool(flipped)))
                except ImageRejected:
                    corr.append(None)
            out = {n: b.column(n) for n, _ in fields}
            out["correlation"] = pa.array(corr, pa.float32())
            yield pa.RecordBatch.from_pydict(out)

    ddl = ", ".join(f"`{n}` {t}" for n, t in fields) + ", correlation float"
    return joined.mapInArrow(fn, ddl)
