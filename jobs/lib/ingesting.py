"""DataFrame transforms of the ingest job: each format's rows -> manifest rows flagged with the
reason they are dropped (`_reason`, null when kept), then one row per image_id, with every count
taken by Observations during the write itself (one pass over the input).

The per-format parsing is pipeline/ingest/'s Spark SQL, applied here with F.expr: no Python runs
per row. Of rows sharing an image_id, the one with the smallest content hash is kept (ties: the
smallest JSON of its columns), so the choice does not depend on partitioning or input order.
"""
from __future__ import annotations

import uuid

from pyspark.sql import Column, DataFrame, Observation, Window
from pyspark.sql import functions as F

from pipeline.ingest import (DUPLICATE_ID, DUPLICATE_IMAGE, EMPTY_ID, EMPTY_IMAGE, NO_TAGS_OR_TEXT, sql_col,
                             text_or_null_sql)
from pipeline.ingest import img2dataset as I2D
from pipeline.ingest import table as TABLE
from pipeline.ingest import yfcc100m as Y

REASON = "_reason"
MANIFEST_COLUMNS = ("image_id", "image", "hashtags", "caption", "text")
def _empty_tags() -> Column:
    return F.array().cast("array<string>")

YFCC_REASONS = (Y.MALFORMED, Y.VIDEO, EMPTY_ID, Y.NO_HASH, EMPTY_IMAGE, NO_TAGS_OR_TEXT)
TABLE_REASONS = (EMPTY_ID, EMPTY_IMAGE, NO_TAGS_OR_TEXT)


def img2dataset_reasons() -> tuple[str, ...]:
    return (*I2D.status_reasons(), EMPTY_ID, I2D.MISSING_MEMBER, EMPTY_IMAGE, NO_TAGS_OR_TEXT)


def _first_reason(checks: list[tuple[Column, str]]) -> Column:
    reason = None
    for cond, name in checks:
        reason = F.when(cond, name) if reason is None else reason.when(cond, name)
    return reason


def _empty(c: Column) -> Column:
    return c.isNull() | (F.length(c) == 0)


# --- yfcc100m ---------------------------------------------------------------------------------

def yfcc_autotags(lines: DataFrame, min_score: float) -> tuple[DataFrame, Observation]:
    """(photo_id, autotags) of an autotags file's lines (column `value`), tags scored at least
    `min_score`; and the Observation counting its lines and malformed ones (no tab or no id)."""
    obs = Observation(f"autotags_{uuid.uuid4().hex[:8]}")
    parts = lines.select(F.split("value", "\t", 2).alias("_p"))
    ok = (F.size("_p") == 2) & (F.length(F.trim(F.col("_p")[0])) > 0)
    observed = parts.observe(obs, F.count(F.lit(1)).alias("lines"), F.count_if(~ok).alias("malformed"))
    tags = observed.filter(ok).select(F.trim(F.col("_p")[0]).alias("_photo_id"),
                                      F.expr(Y.autotags_sql("_p[1]", min_score)).alias("_autotags"))
    return tags.groupBy("_photo_id").agg(F.flatten(F.collect_list("_autotags")).alias("_autotags")), obs


def yfcc_rows(lines: DataFrame, machine_tags: bool, images_root: str | None,
              autotags: DataFrame | None) -> DataFrame:
    """Flagged manifest rows of YFCC100M metadata lines (column `value`), with the per-row counts
    `_undecodable_tag` and `_undecodable_text`."""
    def fld(name: str) -> Column:
        return F.expr(Y.field_sql(name))
    tokens = Y.tokens_sql(Y.field_sql("user_tags"))
    if machine_tags:
        tokens = f"concat({tokens}, {Y.tokens_sql(Y.field_sql('machine_tags'))})"
    title, description = Y.field_sql("title"), Y.field_sql("description")
    image = Y.mmc_path_sql(images_root, Y.field_sql("photo_hash")) if images_root else Y.field_sql("download_url")
    parsed = (lines.select(F.split("value", "\t", -1).alias("_f")).select(
        F.size("_f").alias("_n"),
        fld("photo_id").alias("image_id"),
        F.expr(image).alias("image"),
        F.expr(tokens).alias("_tokens"),
        F.expr(Y.text_sql(Y.decoded_text_sql(title), Y.decoded_text_sql(description))).alias("text"),
        F.expr(f"{Y.undecodable_text_sql(title)} + {Y.undecodable_text_sql(description)}").alias("_undecodable_text"),
        fld("user_nsid").alias("user"), fld("license_name").alias("license"),
        F.expr(Y.double_sql(Y.field_sql("longitude"))).alias("lon"),
        F.expr(Y.double_sql(Y.field_sql("latitude"))).alias("lat"),
        fld("marker").alias("_marker"), fld("photo_hash").alias("_hash"))
        .withColumn("hashtags", F.expr(Y.decoded_tags_sql("_tokens")))
        .withColumn("_undecodable_tag", F.expr(Y.undecodable_sql("_tokens"))))
    if autotags is not None:  # the one shuffle: (id, tags) only on the autotags side
        parsed = (parsed.join(autotags, parsed["image_id"] == autotags["_photo_id"], "left")
                  .withColumn("hashtags",
                              F.array_distinct(F.concat("hashtags", F.coalesce("_autotags", _empty_tags()))))
                  .drop("_photo_id", "_autotags"))
    layouts = sorted(Y.LAYOUTS)
    reason = _first_reason([
        (~F.col("_n").isin(*layouts), Y.MALFORMED),
        (F.col("_marker") == Y.VIDEO_MARKER, Y.VIDEO),
        (_empty(F.col("image_id")), EMPTY_ID),
        (F.lit(bool(images_root)) & _empty(F.col("_hash")), Y.NO_HASH),
        (_empty(F.col("image")), EMPTY_IMAGE),
        ((F.size("hashtags") == 0) & F.col("text").isNull(), NO_TAGS_OR_TEXT),
    ])
    return parsed.withColumn(REASON, reason).drop("_n", "_tokens", "_marker", "_hash")


# --- img2dataset ------------------------------------------------------------------------------

def img2dataset_rows(stats: DataFrame, index: DataFrame | None, id_column: str) -> DataFrame:
    """Flagged manifest rows of img2dataset's stats rows (with their shard in `_shard`) and, for
    the webdataset and files formats, the index of the shards' image members (INDEX_SCHEMA);
    for the parquet format (index None) the image is the `jpg` column's bytes."""
    if id_column not in stats.columns:
        raise ValueError(f"--id-column {id_column}: no such column (columns: {', '.join(stats.columns)})")
    if index is not None:
        members = index.filter(F.col("refused").isNull()).select(
            F.col("shard").alias("_shard"), F.col("key").alias("_key"), F.col("image").alias("_image"))
        rows = stats.join(members, (stats["_shard"] == members["_shard"]) & (stats["key"] == members["_key"]), "left")
        rows = rows.drop(members["_shard"]).drop("_key")
        missing = I2D.MISSING_MEMBER
    else:
        if I2D.IMAGE_COLUMN not in stats.columns:
            raise ValueError(f"no {I2D.IMAGE_COLUMN!r} column of image bytes (columns: {', '.join(stats.columns)})")
        rows, missing = stats.withColumn("_image", F.col(I2D.IMAGE_COLUMN)), EMPTY_IMAGE
    has = set(stats.columns)
    status = F.col("status") if "status" in has else F.lit(None).cast("string")
    caption = F.expr(text_or_null_sql(sql_col("caption"))) if "caption" in has else F.lit(None).cast("string")
    text = F.expr(text_or_null_sql(sql_col("text"))) if "text" in has else None
    dropped = {"status", "error_message", I2D.IMAGE_COLUMN, "_shard", "caption", "text", id_column, *MANIFEST_COLUMNS}
    passed = [c for c in stats.columns if c not in dropped]
    out = rows.select(
        F.col(sql_col(id_column)).cast("string").alias("image_id"), F.col("_image").alias("image"),
        _empty_tags().alias("hashtags"), caption.alias("caption"), *([text.alias("text")] if text is not None else []),
        *[F.col(sql_col(c)) for c in passed], status.alias("_status"))
    reason = _first_reason([
        (F.coalesce(F.col("_status"), F.lit("")) != I2D.SUCCESS, F.expr(I2D.status_reason_sql("_status"))),
        (_empty(F.col("image_id")), EMPTY_ID),
        (_empty(F.col("image")), missing),
        (F.col("caption").isNull() & (F.col("text").isNull() if text is not None else F.lit(True)), NO_TAGS_OR_TEXT),
    ])
    return out.withColumn(REASON, reason).drop("_status")


def refused_members(index: DataFrame) -> tuple[DataFrame, Observation]:
    """The index observed: refused members counted by reason while the join reads it."""
    obs = Observation(f"members_{uuid.uuid4().hex[:8]}")
    return index.observe(obs, F.count_if(F.col("refused") == I2D.UNSAFE_MEMBER).alias(I2D.UNSAFE_MEMBER),
                         F.count_if(F.col("refused") == I2D.NOT_A_FILE).alias(I2D.NOT_A_FILE)), obs


# --- table ------------------------------------------------------------------------------------

def table_rows(df: DataFrame, sources: dict[str, str], tags_sep: str) -> DataFrame:
    """Flagged manifest rows of a table whose manifest columns come from `sources`
    (pipeline.ingest.table.source_columns); every other column passes through."""
    types = dict(df.dtypes)
    image_src = sources["image"]
    image = F.col(sql_col(image_src))
    if types[image_src] not in ("string", "binary"):
        image = image.cast("string")
    cols = {"image_id": (F.col(sql_col(sources["image_id"])).cast("string") if "image_id" in sources
                         else F.when(~_empty(image), F.expr(TABLE.hashed_id_sql(image_src)))),
            "image": image,
            "hashtags": (F.expr(TABLE.tags_sql(sources["hashtags"], types[sources["hashtags"]].startswith("array"),
                                               tags_sep)) if "hashtags" in sources else _empty_tags())}
    for c in ("caption", "text"):
        if c in sources:
            cols[c] = F.expr(text_or_null_sql(f"CAST({sql_col(sources[c])} AS string)"))
    used = set(sources.values())
    passed = [c for c in df.columns if c not in used and c not in cols]
    out = df.select(*[v.alias(k) for k, v in cols.items()], *[F.col(sql_col(c)) for c in passed])
    no_text = F.lit(True)
    for c in ("caption", "text"):
        if c in cols:
            no_text = no_text & F.col(c).isNull()
    reason = _first_reason([
        (_empty(F.col("image")), EMPTY_IMAGE),
        (_empty(F.col("image_id")), EMPTY_ID),
        ((F.size("hashtags") == 0) & no_text, NO_TAGS_OR_TEXT),
    ])
    return out.withColumn(REASON, reason)


# --- all formats ------------------------------------------------------------------------------

def observed_manifest(flagged: DataFrame, reasons: tuple[str, ...], counters: tuple[str, ...] = ()):
    """(the manifest: kept rows, one per image_id; the Observation of rows read, dropped by reason
    and the kept rows' sums of `counters`; the Observation of rows written). Both are filled by
    the action that writes the manifest."""
    seen, written = (Observation(f"{n}_{uuid.uuid4().hex[:8]}") for n in ("ingest_read", "ingest_written"))
    kept = F.col(REASON).isNull()
    metrics = [F.count(F.lit(1)).alias("rows_read"), F.count_if(kept).alias("rows_kept"),
               *[F.count_if(F.col(REASON) == r).alias(r) for r in reasons],
               *[F.coalesce(F.sum(F.when(kept, F.col(c))), F.lit(0)).alias(c) for c in counters]]
    rows = flagged.observe(seen, *metrics).filter(kept).drop(REASON, *counters)
    payload = [F.col(sql_col(c)) for c in rows.columns]
    order = [F.xxhash64(*payload), F.to_json(F.struct(*[F.col(sql_col(c)) for c, t in rows.dtypes if t != "binary"]))]
    one = (rows.withColumn("_rank", F.row_number().over(Window.partitionBy("image_id").orderBy(*order)))
           .filter(F.col("_rank") == 1).drop("_rank"))
    first = [c for c in MANIFEST_COLUMNS if c in one.columns]
    one = one.select(*first, *[sql_col(c) for c in one.columns if c not in first])
    return one.observe(written, F.count(F.lit(1)).alias("rows_written")), seen, written


def tally(seen: Observation, written: Observation, reasons: tuple[str, ...], duplicate: str,
          counters: tuple[str, ...] = ()) -> dict:
    """rows_read, rows_written, rows_dropped {reason: n} (+ `duplicate`) and the counters' sums."""
    s, w = seen.get, written.get
    dropped = {r: int(s[r]) for r in reasons}
    dropped[duplicate] = int(s["rows_kept"]) - int(w["rows_written"])
    out = {"rows_read": int(s["rows_read"]), "rows_written": int(w["rows_written"]), "rows_dropped": dropped}
    if out["rows_read"] != out["rows_written"] + sum(dropped.values()):
        raise AssertionError(f"ingest counts do not add up: {out}")  # a reason missing from `reasons`
    return {**out, **{c.lstrip("_"): int(s[c]) for c in counters}}


def duplicate_reason(hashed_ids: bool) -> str:
    """What a second row of one image_id is: the same image when ids are hashed from it."""
    return DUPLICATE_IMAGE if hashed_ids else DUPLICATE_ID
