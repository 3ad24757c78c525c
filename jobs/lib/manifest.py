"""Reading and cleaning a manifest (Parquet or JSON Lines) in Spark.

Required columns are checked up front with errors that name the file and column; bad rows are
counted by reason in a single pass and dropped, never lost silently.
"""
from __future__ import annotations

import pandas as pd  # the caption UDF's type hints (pandas_udf resolves them in this module)
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.normalize import TAG_SEPARATOR, caption_hashtags_joined
from schemas import MANIFEST_CAPTION, MANIFEST_HASHTAGS, MANIFEST_ID, MANIFEST_IMAGE

CORRUPT = "_corrupt_record"
TAGS = "_raw_tags"  # hashtags column + the caption's #words, added by clean_manifest
DROP_REASONS = ("malformed_json", "missing_image_id", "missing_image", "no_hashtags", "duplicate_image_id")
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz")


class ManifestError(ValueError):
    """A manifest that cannot be used at all (unreadable file, missing or mistyped column)."""


def manifest_format(path: str) -> str:
    p = path.rstrip("/").lower()
    return "json" if p.endswith(_JSON_SUFFIXES) else "parquet"


def read_manifest(spark: SparkSession, path: str) -> DataFrame:
    """The manifest as a DataFrame; required columns validated (types named in schemas/)."""
    fmt = manifest_format(path)
    try:
        if fmt == "parquet":
            df = _read_parquet(spark, path)
        else:
            df = _read_jsonl(spark, path)
    except ManifestError:
        raise
    except Exception as e:  # AnalysisException, Py4JJavaError: the JVM's message names the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ManifestError(f"{path}: cannot read manifest as {fmt}: {first}") from None
    _validate(df, path)
    return df


def _read_parquet(spark: SparkSession, path: str) -> DataFrame:
    """Every part file's footer is read (mergeSchema, a distributed scan of the footers), so part
    files that disagree on a column's type are found before any work, not by a task half-way."""
    try:
        return spark.read.option("mergeSchema", "true").parquet(path)
    except Exception as e:
        if "MERGE" not in str(e).upper():
            raise
        raise ManifestError(_type_conflict(spark, path) or f"{path}: part files disagree on a column's type: "
                            f"{str(e).strip().splitlines()[0]}") from None


def _type_conflict(spark: SparkSession, path: str) -> str | None:
    """The first column whose type differs between two part files of `path`, naming both files
    (only on the error path: one footer read per file on the driver)."""
    jvm = spark.sparkContext._jvm
    root = jvm.org.apache.hadoop.fs.Path(path)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    files, it = [], fs.listFiles(root, True)
    while it.hasNext():
        p = it.next().getPath()
        rel = p.toString()[len(fs.makeQualified(root).toString()):]
        if not any(part.startswith(("_", ".")) for part in rel.split("/") if part):
            files.append(p.toString())
    seen: dict[str, tuple[str, str]] = {}  # column -> (type, first file with it)
    for f in sorted(files):
        for field in spark.read.parquet(f).schema.fields:
            t = field.dataType.simpleString()
            if field.name in seen and seen[field.name][0] != t:
                first_type, first_file = seen[field.name]
                return (f"{path}: column {field.name!r} is {t} in part file {f} but {first_type} in {first_file}: "
                        "the part files of one manifest must agree on every column's type")
            seen.setdefault(field.name, (t, f))
    return None


def _read_jsonl(spark: SparkSession, path: str) -> DataFrame:
    inferred = spark.read.option("mode", "PERMISSIVE").json(path).schema
    if not inferred.fields or inferred.fieldNames() == [CORRUPT]:
        raise ManifestError(f"{path}: no JSON objects found")
    # Pin the required columns' types so a row with e.g. a string for `hashtags` is malformed
    # (counted) instead of silently changing the column's type for every row.
    fixed = {MANIFEST_ID: T.StringType(), MANIFEST_HASHTAGS: T.ArrayType(T.StringType()),
             MANIFEST_CAPTION: T.StringType(), MANIFEST_IMAGE: T.StringType()}
    fields = [T.StructField(f.name, fixed.get(f.name, f.dataType)) for f in inferred.fields if f.name != CORRUPT]
    fields.append(T.StructField(CORRUPT, T.StringType()))
    df = (spark.read.schema(T.StructType(fields)).option("mode", "PERMISSIVE")
          .option("columnNameOfCorruptRecord", CORRUPT).json(path))
    return df.cache()  # Spark refuses queries on the corrupt column of an uncached JSON scan


def _validate(df: DataFrame, path: str) -> None:
    types = dict((f.name, f.dataType) for f in df.schema.fields)
    for col in (MANIFEST_ID, MANIFEST_IMAGE):
        if col not in types:
            raise ManifestError(f"{path}: missing required column {col!r} (columns: {sorted(types)})")
    if MANIFEST_HASHTAGS not in types and MANIFEST_CAPTION not in types:
        raise ManifestError(f"{path}: needs a {MANIFEST_HASHTAGS!r} (list of strings) or {MANIFEST_CAPTION!r} column")
    expect = {MANIFEST_ID: (T.StringType(),), MANIFEST_IMAGE: (T.StringType(), T.BinaryType()),
              MANIFEST_HASHTAGS: (T.ArrayType(T.StringType(), True), T.ArrayType(T.StringType(), False)),
              MANIFEST_CAPTION: (T.StringType(),)}
    for col, allowed in expect.items():
        if col in types and types[col] not in allowed:
            want = " or ".join(a.simpleString() for a in allowed)
            raise ManifestError(f"{path}: column {col!r} is {types[col].simpleString()}, expected {want}")


def clean_manifest(df: DataFrame) -> tuple[DataFrame, dict]:
    """(rows kept with a `_raw_tags` array column, {rows_read, rows_kept, rows_dropped: {reason: n}}).

    Of rows sharing an image_id, the valid row with the smallest content hash is kept, so the
    choice does not depend on partitioning or input order.
    """
    cols = df.columns
    tags = F.coalesce(F.col(MANIFEST_HASHTAGS), F.array().cast("array<string>")) if MANIFEST_HASHTAGS in cols \
        else F.array().cast("array<string>")
    if MANIFEST_CAPTION in cols:
        tags = F.concat(tags, F.split(caption_tags_udf()(F.col(MANIFEST_CAPTION)), TAG_SEPARATOR))
    tags = F.filter(tags, lambda t: t.isNotNull() & (F.length(t) > 0))
    image = F.col(MANIFEST_IMAGE)
    image_missing = image.isNull() | (F.length(image) == 0)
    reason = F.when(F.col(CORRUPT).isNotNull(), "malformed_json") if CORRUPT in cols else None
    checks = [
        (F.col(MANIFEST_ID).isNull() | (F.length(F.col(MANIFEST_ID)) == 0), "missing_image_id"),
        (image_missing, "missing_image"),
        (F.size(F.col(TAGS)) == 0, "no_hashtags"),
    ]
    for cond, name in checks:
        reason = F.when(cond, name) if reason is None else reason.when(cond, name)
    payload = [c for c in cols if c != CORRUPT]
    staged = df.withColumn(TAGS, tags).withColumn("_reason", reason)
    drop = ["_reason", *([CORRUPT] if CORRUPT in cols else [])]
    valid = staged.filter(F.col("_reason").isNull()).drop(*drop)
    # Duplicate ids are found by a count of 64-bit id hashes (map-side combined: one long per
    # image crosses the shuffle, never the row); only rows whose hash repeats take the window
    # that picks one per id, so a manifest with unique ids is cleaned without moving its rows.
    id_hash = F.xxhash64(F.col(MANIFEST_ID))
    repeated = (valid.select(id_hash.alias("_h")).groupBy("_h").count().filter(F.col("count") > 1)
                .select("_h").cache())
    marked = valid.withColumn("_h", id_hash)
    unique = marked.join(F.broadcast(repeated), "_h", "left_anti").drop("_h")
    content = F.xxhash64(*[F.col(c) for c in payload])
    w = Window.partitionBy(MANIFEST_ID).orderBy(content, F.to_json(F.struct(*[
        F.col(c) for c in payload if dict(df.dtypes)[c] != "binary"])))
    ranked = (marked.join(F.broadcast(repeated), "_h", "left_semi").drop("_h")
              .withColumn("_rank", F.row_number().over(w)).cache())
    counts = {r["_reason"]: r["count"] for r in staged.groupBy("_reason").count().collect()}
    n_valid = counts.pop(None, 0)
    counts["duplicate_image_id"] = ranked.filter(F.col("_rank") > 1).count()
    kept = n_valid - counts["duplicate_image_id"]
    stats = {"rows_read": n_valid + sum(counts.values()) - counts["duplicate_image_id"], "rows_kept": kept,
             "rows_dropped": {k: int(counts.get(k, 0)) for k in DROP_REASONS}}
    clean = unique.unionByName(ranked.filter(F.col("_rank") == 1).drop("_rank"))
    return clean, stats


def caption_tags_udf():
    """A vectorised UDF: caption -> its hashtags joined by TAG_SEPARATOR (pipeline/normalize.py's
    caption_hashtags_joined, the one rule). Only the caption column crosses to Python, an Arrow
    batch at a time, and a string comes back, so no Python runs per row."""
    def fn(captions: pd.Series) -> pd.Series:
        joined = caption_hashtags_joined(pa.array(captions, pa.string(), from_pandas=True))
        return pd.Series(pd.arrays.ArrowExtensionArray(joined), index=captions.index)
    return F.pandas_udf(fn, "string")
