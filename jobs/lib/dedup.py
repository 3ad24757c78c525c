"""DataFrame transforms of the dedup job: evaluation sources, hashing, banded candidates, matches.

Only band keys are joined (never all pairs): each pretraining hash is exploded into one
(band, value) row per band, each evaluation hash into one row per band and probe mask.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lib.manifest import ManifestError, manifest_format
from pipeline.images import IMAGE_SUFFIXES as SUFFIX_FORMATS, ImageRejected, read_image_bytes
from pipeline.lsh import Banding
from pipeline.phash import MIN_SET_BITS, Box, decode_rgb, low_information, variant_hashes
from schemas import MANIFEST_ID, MANIFEST_IMAGE

IMAGE_SUFFIXES = tuple(SUFFIX_FORMATS)  # the decoder's: an image folder lists what it may decode
HASHED = "variant int, flipped boolean, hash long, reason string, detail string"


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


def hash_images(df: DataFrame, keys: list[str], crops: list[Box], flips: bool,
                image_root: str | None, min_set_bits: int = MIN_SET_BITS) -> DataFrame:
    """keys + (variant, flipped, hash, reason, detail): one row per distinct variant hash of each
    readable image (variant = crop index, 0 the whole image), one row with its reject reason and
    a null hash for each unreadable one or one whose whole-image hash is `low_information`."""
    nk = len(keys)

    def fn(batches):
        for b in batches:
            cols = [b.column(i).to_pylist() for i in range(nk + 1)]
            out = {k: [] for k in [*keys, "variant", "flipped", "hash", "reason", "detail"]}
            for row in zip(*cols):
                try:
                    rgb = decode_rgb(read_image_bytes(row[nk], image_root))
                    seen, found = set(), []
                    for v, flipped, h in variant_hashes(rgb, crops, flips):
                        if h not in seen:  # symmetric images: the mirror often hashes the same
                            seen.add(h)
                            found.append((v, flipped, h, None, None))
                    if low_information(found[0][2], min_set_bits):
                        n = bin(found[0][2]).count("1")
                        found = [(None, None, None, "low_information", f"{n} of 63 hash bits set")]
                except ImageRejected as e:
                    found = [(None, None, None, e.reason, e.detail[:300])]
                for f in found:
                    for k, v in zip(keys, row[:nk]):
                        out[k].append(v)
                    for k, v in zip(("variant", "flipped", "hash", "reason", "detail"), f):
                        out[k].append(v)
            yield pa.RecordBatch.from_pydict(out, schema=pa.schema(
                [(k, pa.string()) for k in keys] + [("variant", pa.int32()), ("flipped", pa.bool_()),
                                                    ("hash", pa.int64()), ("reason", pa.string()),
                                                    ("detail", pa.string())]))
    schema = ", ".join(f"{k} string" for k in keys) + ", " + HASHED
    return df.select(*keys, MANIFEST_IMAGE).mapInArrow(fn, schema)


def _band_value(shift: int, width: int, h: str = "hash") -> F.Column:
    return F.shiftright(F.col(h), shift).bitwiseAND(F.lit((1 << width) - 1))


def index_keys(hashed: DataFrame, banding: Banding) -> DataFrame:
    """(pretrain_id, pretrain_hash, band, value): one row per band of each pretraining hash."""
    keys = F.array(*[F.struct(F.lit(b).alias("band"), _band_value(s, w).alias("value"))
                     for b, (s, w) in enumerate(banding.spans())])
    return hashed.select(F.col(MANIFEST_ID).alias("pretrain_id"), F.col("hash").alias("pretrain_hash"),
                         F.explode(keys).alias("k")).select("pretrain_id", "pretrain_hash", "k.band", "k.value")


def _probe(band: int, shift: int, width: int):
    return lambda m: F.struct(F.lit(band).alias("band"), _band_value(shift, width).bitwiseXOR(m).alias("value"))


def probe_keys(hashed: DataFrame, banding: Banding) -> DataFrame:
    """(eval_set, eval_id, variant, flipped, eval_hash, band, value): every band value XOR every
    probe mask of weight <= banding.radius."""
    per_band = []
    for b, (s, w) in enumerate(banding.spans()):
        masks = F.array(*[F.lit(m).cast("long") for m in banding.probe_masks(b)])
        per_band.append(F.transform(masks, _probe(b, s, w)))
    return hashed.select("eval_set", F.col(MANIFEST_ID).alias("eval_id"), "variant", "flipped",
                         F.col("hash").alias("eval_hash"), F.explode(F.flatten(F.array(*per_band))).alias("k")
                         ).select("eval_set", "eval_id", "variant", "flipped", "eval_hash", "k.band", "k.value")


def candidate_pairs(pre_ok: DataFrame, eval_ok: DataFrame, banding: Banding) -> DataFrame:
    """(pretrain_id, eval_set, eval_id, distance, flipped, variant, band): every pair sharing a
    probed band value, once, with its smallest distance over the evaluation image's variants
    (ties: unflipped first, then the smaller crop index, then the lower band)."""
    joined = index_keys(pre_ok, banding).join(probe_keys(eval_ok, banding), ["band", "value"])
    best = F.min(F.struct(F.bit_count(F.col("pretrain_hash").bitwiseXOR(F.col("eval_hash"))).alias("distance"),
                          "flipped", "variant", "band")).alias("best")
    return (joined.groupBy("pretrain_id", "eval_set", "eval_id").agg(best)
            .select("pretrain_id", "eval_set", "eval_id", F.col("best.distance").cast("int").alias("distance"),
                    "best.flipped", "best.variant", "best.band"))


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
