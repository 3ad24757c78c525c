"""Reading and cleaning a manifest (Parquet or JSON Lines) in Spark.

Required columns are checked up front with errors that name the file and column; bad rows are
counted by reason (an Observation, during the first pass a job makes anyway) and dropped, never
lost silently.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd  # the caption UDF's type hints (pandas_udf resolves them in this module)
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.lib.caption_tags import TagSource, caption_entries_udf, caption_metrics, caption_stats
from jobs.lib.output import part_files
from pipeline.normalize import TAG_SEPARATOR, caption_hashtags_joined
from schemas import MANIFEST_CAPTION, MANIFEST_HASHTAGS, MANIFEST_ID, MANIFEST_IMAGE

CORRUPT = "_corrupt_record"
TAGS = "_raw_tags"  # an image's raw tags from its TagSource, added by clean_manifest
DROP_REASONS = ("malformed_json", "missing_image_id", "missing_image", "no_hashtags", "duplicate_image_id")
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz")


class ManifestError(ValueError):
    """A manifest that cannot be used at all (unreadable file, missing or mistyped column)."""


def manifest_format(path: str) -> str:
    p = path.rstrip("/").lower()
    return "json" if p.endswith(_JSON_SUFFIXES) else "parquet"


def read_manifest(spark: SparkSession, path: str, tags: TagSource = TagSource()) -> DataFrame:
    """The manifest as a DataFrame; required columns validated (types named in schemas/), the
    tags' columns among them (`tags`: where the raw tags come from)."""
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
    _validate(df, path, tags)
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
    files = part_files(spark, path)
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


def _validate(df: DataFrame, path: str, tags: TagSource) -> None:
    types = dict((f.name, f.dataType) for f in df.schema.fields)
    for col in (MANIFEST_ID, MANIFEST_IMAGE):
        if col not in types:
            raise ManifestError(f"{path}: missing required column {col!r} (columns: {sorted(types)})")
    if tags.captions and tags.caption_column not in types:
        raise ManifestError(f"{path}: no column {tags.caption_column!r} to take tags from (--tags-from caption "
                            f"--caption-column {tags.caption_column}); columns: {sorted(types)}")
    if not tags.captions and MANIFEST_HASHTAGS not in types and MANIFEST_CAPTION not in types:
        raise ManifestError(f"{path}: needs a {MANIFEST_HASHTAGS!r} (list of strings) or {MANIFEST_CAPTION!r} column")
    expect = {MANIFEST_ID: (T.StringType(),), MANIFEST_IMAGE: (T.StringType(), T.BinaryType()),
              MANIFEST_HASHTAGS: (T.ArrayType(T.StringType(), True), T.ArrayType(T.StringType(), False)),
              MANIFEST_CAPTION: (T.StringType(),), **({tags.caption_column: (T.StringType(),)} if tags.captions else {})}
    for col, allowed in expect.items():
        if col in types and types[col] not in allowed:
            want = " or ".join(a.simpleString() for a in allowed)
            raise ManifestError(f"{path}: column {col!r} is {types[col].simpleString()}, expected {want}")


ID_HASH = "_h"  # xxhash64 of image_id: the duplicate check's key


@dataclass
class CleanManifest:
    """A manifest's rows checked, lazily: `valid` (the rows passing every row check, with TAGS and
    ID_HASH) is observed, so the first action over it counts the rows by drop reason in the same
    pass (no pass of its own). Duplicate ids are resolved by `without_duplicates` from the id
    hashes that repeat, found by whoever reads the ids (`repeated_id_hashes`, or a job's fused
    pass); the counts come back from `stats` once an action has run."""
    valid: DataFrame
    reasons: Observation
    payload: list[str]
    binary: set[str]
    tags: TagSource
    duplicates: int = 0

    def without_duplicates(self, repeated: DataFrame | None) -> DataFrame:
        """The kept rows (TAGS added, ID_HASH dropped): of rows sharing an image_id, the valid row
        with the smallest content hash, so the choice depends on neither partitioning nor input
        order. `repeated` holds the ID_HASH values seen more than once (None: none repeat); only
        rows with such a hash take the window that picks one per id, so a manifest with unique
        ids is cleaned without moving its rows. Counts the dropped duplicates (one small pass
        over the rows whose hash repeats) into `duplicates`."""
        if repeated is None or repeated.isEmpty():
            self.duplicates = 0
            return self.valid.drop(ID_HASH)
        repeated = F.broadcast(repeated.select(ID_HASH).cache())
        content = F.xxhash64(*[F.col(c) for c in self.payload])
        w = Window.partitionBy(MANIFEST_ID).orderBy(content, F.to_json(F.struct(*[
            F.col(c) for c in self.payload if c not in self.binary])))
        ranked = (self.valid.join(repeated, ID_HASH, "left_semi").drop(ID_HASH)
                  .withColumn("_rank", F.row_number().over(w)).cache())
        self.duplicates = ranked.filter(F.col("_rank") > 1).count()
        unique = self.valid.join(repeated, ID_HASH, "left_anti").drop(ID_HASH)
        return unique.unionByName(ranked.filter(F.col("_rank") == 1).drop("_rank"))

    def stats(self) -> dict:
        """{rows_read, rows_kept, rows_dropped: {reason: n}} (and with tags from captions,
        `captions`: jobs.lib.caption_tags.caption_stats), once an action has read `valid`."""
        seen = self.reasons.get
        dropped = {r: int(seen.get(r) or 0) for r in DROP_REASONS if r != "duplicate_image_id"}
        n_valid = int(seen.get("valid") or 0)
        dropped["duplicate_image_id"] = self.duplicates
        return {"rows_read": n_valid + sum(dropped.values()) - self.duplicates,
                "rows_kept": n_valid - self.duplicates,
                "rows_dropped": {k: dropped[k] for k in DROP_REASONS},
                **({"captions": caption_stats(seen)} if self.tags.captions else {})}


def raw_tags(cols: list[str], source: TagSource) -> Column:
    """An image's raw tags (TAGS): with tags from hashtags, the `hashtags` column plus the
    caption's `#words`; from captions, the WordNet entries matched in the caption column."""
    if source.captions:
        tags = F.split(caption_entries_udf(source.lexnames)(F.col(source.caption_column)), TAG_SEPARATOR)
    else:
        tags = F.coalesce(F.col(MANIFEST_HASHTAGS), F.array().cast("array<string>")) if MANIFEST_HASHTAGS in cols \
            else F.array().cast("array<string>")
        if MANIFEST_CAPTION in cols:
            tags = F.concat(tags, F.split(caption_tags_udf()(F.col(MANIFEST_CAPTION)), TAG_SEPARATOR))
    return F.filter(tags, lambda t: t.isNotNull() & (F.length(t) > 0))


def clean_manifest(df: DataFrame, source: TagSource = TagSource()) -> CleanManifest:
    """The manifest's rows checked (see CleanManifest), their raw tags taken from `source`;
    nothing runs yet."""
    cols = df.columns
    tags = raw_tags(cols, source)
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
    reasons = Observation("manifest rows by drop reason")
    per_caption = caption_metrics(F.col(source.caption_column), F.col(TAGS)) if source.captions else []
    staged = staged.observe(reasons, F.sum(F.col("_reason").isNull().cast("long")).alias("valid"), *[
        F.sum((F.col("_reason") == r).cast("long")).alias(r) for r in DROP_REASONS if r != "duplicate_image_id"],
        *per_caption)
    valid = (staged.filter(F.col("_reason").isNull()).drop("_reason", *([CORRUPT] if CORRUPT in cols else []))
             .withColumn(ID_HASH, F.xxhash64(F.col(MANIFEST_ID))))
    return CleanManifest(valid, reasons, payload, {c for c, t in df.dtypes if t == "binary"}, source)


def repeated_id_hashes(valid: DataFrame) -> DataFrame:
    """(ID_HASH) of the hashes seen more than once: a count of one long per row (map-side combined),
    never the row."""
    return valid.select(ID_HASH).groupBy(ID_HASH).count().filter(F.col("count") > 1).select(ID_HASH)


def caption_tags_udf():
    """A vectorised UDF: caption -> its hashtags joined by TAG_SEPARATOR (pipeline/normalize.py's
    caption_hashtags_joined, the one rule). Only the caption column crosses to Python, an Arrow
    batch at a time, and a string comes back, so no Python runs per row."""
    def fn(captions: pd.Series) -> pd.Series:
        joined = caption_hashtags_joined(pa.array(captions, pa.string(), from_pandas=True))
        return pd.Series(pd.arrays.ArrowExtensionArray(joined), index=captions.index)
    return F.pandas_udf(fn, "string")
