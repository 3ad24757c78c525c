"""Ingest a corpus you have (YFCC100M, an img2dataset output, a table) as a hashtag manifest.

    spark-submit jobs/ingest.py --format yfcc100m --input yfcc100m_dataset.bz2 --out DIR \
        [--machine-tags] [--autotags FILE --autotag-min-score 0.5] [--images-root URL_OR_PATH]
    spark-submit jobs/ingest.py --format img2dataset --input FOLDER --out DIR \
        [--input-format webdataset|parquet|files] [--id-column key]
    spark-submit jobs/ingest.py --format table --input cc12m.tsv --out DIR --columns image,caption \
        [--table-format parquet|csv|tsv|jsonl] [--id C] [--image C] [--tags C --tags-sep ,] \
        [--caption C] [--text C] [--master local[*]]

Writes DIR/manifest.parquet (Spark part files, committed atomically with its _SUCCESS: the
manifest jobs/vocab.py, dedup and label read) and then DIR/stats.json (rows read, written,
dropped by reason, the config). One pass over the input: rows are parsed by Spark SQL
(pipeline/ingest/), counted by Observations while the manifest is written. docs/pipeline.md
("Ingest: your own data") lists each format's columns and drop reasons.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

import schemas  # noqa: E402

from jobs.lib import ingesting as ING  # noqa: E402
from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.errors import reported  # noqa: E402
from jobs.lib.output import atomic_output, write_json  # noqa: E402
from jobs.lib.session import get_session, input_bytes, tune_session  # noqa: E402
from pipeline.atomic import write_text_atomic  # noqa: E402
from pipeline.image_reader import is_remote, open_input, redact  # noqa: E402
from pipeline.ingest import img2dataset as I2D  # noqa: E402
from pipeline.ingest import remote_table as REMOTE_TABLE  # noqa: E402
from pipeline.ingest import table as TABLE  # noqa: E402

log = logging.getLogger("ingest")
FORMATS = ("yfcc100m", "img2dataset", "table")
# flags that only one format reads: given with another, they are a usage error
_FORMAT_OF = {"machine_tags": "yfcc100m", "autotags": "yfcc100m", "images_root": "yfcc100m",
              "input_format": "img2dataset", "id_column": "img2dataset", "table_format": "table", "id": "table",
              "image": "table", "tags": "table", "tags_sep": "table", "caption": "table", "text": "table",
              "columns": "table"}


@dataclass(frozen=True)
class IngestConfig:
    format: str = field(metadata={"help": "|".join(FORMATS)})
    input: str = field(metadata={"help": "the metadata file(s), folder or table (path or URL)"})
    out: str = field(metadata={"help": "output directory: manifest.parquet, stats.json"})
    machine_tags: bool = field(default=False, metadata={"help": "yfcc100m: machine tags are hashtags too"})
    autotags: str | None = field(default=None, metadata={"help": "yfcc100m: autotags file (id TAB tag:score,...)"})
    autotag_min_score: float = field(default=0.5, metadata={"help": "yfcc100m: keep autotags scored at least this"})
    images_root: str | None = field(default=None, metadata={"help": "yfcc100m: multimedia-commons image root"})
    input_format: str | None = field(default=None, metadata={"help": "img2dataset: webdataset|parquet|files "
                                                                     "(default: what the folder holds)"})
    id_column: str = field(default="key", metadata={"help": "img2dataset: the image_id column (DataComp: uid)"})
    table_format: str | None = field(default=None, metadata={"help": "table: parquet|csv|tsv|jsonl (default: suffix)"})
    id: str | None = field(default=None, metadata={"help": "table: id column (default: a hash of the image)"})
    image: str | None = field(default=None, metadata={"help": "table: image column (default: image)"})
    tags: str | None = field(default=None, metadata={"help": "table: hashtags column, a list or a string"})
    tags_sep: str = field(default=",", metadata={"help": "table: separator of a string hashtags column"})
    caption: str | None = field(default=None, metadata={"help": "table: caption column (its #words are hashtags)"})
    text: str | None = field(default=None, metadata={"help": "table: text column (image-text training only)"})
    columns: tuple[str, ...] = field(default=(), metadata={"help": "table: a headerless CSV/TSV's column names"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's, local[*])"})

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"unknown --format {self.format}; valid: {', '.join(FORMATS)}")
        defaults = {f.name: f.default for f in fields(self)}
        for name, fmt in _FORMAT_OF.items():
            if fmt != self.format and getattr(self, name) != defaults[name]:
                raise ValueError(f"--{name.replace('_', '-')} applies to --format {fmt}, not {self.format}")
        if self.input_format not in (None, *I2D.FORMATS):
            raise ValueError(f"unknown --input-format {self.input_format}; valid: {', '.join(I2D.FORMATS)}")
        if self.table_format not in (None, *TABLE.FORMATS):
            raise ValueError(f"unknown --table-format {self.table_format}; valid: {', '.join(TABLE.FORMATS)}")
        if self.format == "table":
            fmt = self.table_format or TABLE.table_format(self.input)
            if self.columns and fmt not in ("csv", "tsv"):
                raise ValueError(f"--columns names a headerless CSV/TSV's columns, not a {fmt} table's")
        if not self.tags_sep:
            raise ValueError("--tags-sep is empty")


def read_table(spark, cfg: IngestConfig):
    fmt = cfg.table_format or TABLE.table_format(cfg.input)
    if is_remote(cfg.input):  # read in the tasks through fsspec: Spark's readers need hadoop-aws & co.
        files = REMOTE_TABLE.list_files(cfg.input)
        if not files:
            raise ValueError(f"{redact(cfg.input)}: no files")
        schema = REMOTE_TABLE.schema_of(files[0], fmt, cfg.columns)
        return remote_files(spark, files, lambda url: REMOTE_TABLE.read_file(url, fmt, cfg.columns), schema)
    if fmt == "parquet":
        return spark.read.option("mergeSchema", "true").parquet(cfg.input)
    if fmt == "jsonl":
        return spark.read.json(cfg.input)
    reader = spark.read.option("header", str(not cfg.columns).lower()).option("sep", "\t" if fmt == "tsv" else ",")
    if fmt == "tsv":
        reader = reader.option("quote", "\u0000")  # TSV captions hold quotes: a TSV field is never quoted
    df = reader.csv(cfg.input)
    if cfg.columns:
        if len(cfg.columns) > len(df.columns):
            raise ValueError(f"{cfg.input}: --columns names {len(cfg.columns)} columns, the file has {len(df.columns)}")
        df = df.toDF(*cfg.columns, *df.columns[len(cfg.columns):])
    return df


def read_img2dataset(spark, cfg: IngestConfig):
    """(stats rows with their `_shard`, the member index or None, the folder's format)."""
    entries = I2D.list_entries(cfg.input)
    try:
        fmt = cfg.input_format or I2D.detect_format(entries)
    except ValueError as e:
        raise ValueError(f"{cfg.input}: {e}") from None
    parquets = I2D.shard_files(entries, ".parquet")
    if not parquets:
        raise ValueError(f"{cfg.input}: no NNNNN.parquet files (img2dataset's per-shard rows)")
    if is_remote(cfg.input):  # read in the tasks through fsspec: Spark's readers need hadoop-aws & co.
        stats = remote_parquet(spark, cfg.input, parquets)
    else:
        stats = (spark.read.option("mergeSchema", "true").parquet(*[I2D.join_url(cfg.input, p) for p in parquets])
                 .withColumn("_shard", F.regexp_extract(F.col("_metadata.file_name"), r"^(.*)\.parquet$", 1)))
    if fmt == "parquet":
        return stats, None, fmt
    units = I2D.shard_files(entries, ".tar") if fmt == "webdataset" else I2D.shard_dirs(entries)
    if not units:
        raise ValueError(f"{cfg.input}: no {'NNNNN.tar' if fmt == 'webdataset' else 'NNNNN/'} shards")
    root, tars = cfg.input, fmt == "webdataset"

    def index(names):  # one task per shard (a tar's headers, or a folder's listing)
        for name in names:
            url, shard = I2D.join_url(root, name), name.removesuffix(".tar")
            yield from (I2D.index_tar_url(url, shard) if tars else I2D.index_folder_url(url, shard))
    rdd = spark.sparkContext.parallelize(units, len(units)).mapPartitions(index)
    return stats, spark.createDataFrame(rdd, I2D.INDEX_SCHEMA), fmt


def remote_parquet(spark, root: str, names: list[str]):
    """img2dataset's per-shard stats rows from a remote folder, with each row's shard (`_shard`)."""
    import pyarrow.parquet as pq

    with open_input(I2D.join_url(root, names[0])) as f:
        schema = pq.read_schema(f)
    schema = pa.schema([f for f in schema if f.name != "_shard"]).append(pa.field("_shard", pa.string()))

    def read(url: str) -> pa.Table:
        with open_input(url) as f:
            t = pq.read_table(f)
        name = url.rsplit("/", 1)[-1].removesuffix(".parquet")
        return t.append_column("_shard", pa.array([name] * len(t), pa.string()))
    return remote_files(spark, [I2D.join_url(root, n) for n in names], read, schema)


def remote_files(spark, urls: list[str], read, schema: pa.Schema):
    """A DataFrame of `schema` from remote files, one task per file: read(url) -> pyarrow table
    through fsspec, conformed to `schema` (pipeline.ingest.remote_table.conform)."""
    spark_schema = schemas.spark_schema(schema)

    def tasks(batches):
        for b in batches:
            for url in b.column("url").to_pylist():
                yield from REMOTE_TABLE.conform(read(url), schema, redact(url)).to_batches()
    files = spark.createDataFrame([(u,) for u in urls], "url string").repartition(max(1, len(urls)))
    return files.mapInArrow(tasks, spark_schema)


def run(spark, cfg: IngestConfig) -> dict:
    extra, counters, observed = {}, (), {}
    if cfg.format == "yfcc100m":
        autotags = None
        if cfg.autotags:
            autotags, observed["autotags"] = ING.yfcc_autotags(spark.read.text(cfg.autotags), cfg.autotag_min_score)
        flagged = ING.yfcc_rows(spark.read.text(cfg.input), cfg.machine_tags, cfg.images_root, autotags)
        reasons, counters = ING.YFCC_REASONS, ("_undecodable_tag", "_undecodable_text")
    elif cfg.format == "img2dataset":
        stats, index, extra["input_format"] = read_img2dataset(spark, cfg)
        if index is not None:
            index, observed["members_refused"] = ING.refused_members(index)
        flagged, reasons = ING.img2dataset_rows(stats, index, cfg.id_column), ING.img2dataset_reasons()
    else:
        df = read_table(spark, cfg)
        named = {"id": cfg.id, "image": cfg.image, "tags": cfg.tags, "caption": cfg.caption, "text": cfg.text}
        flagged = ING.table_rows(df, TABLE.source_columns(df.columns, named), cfg.tags_sep)
        reasons, extra["hashed_ids"] = ING.TABLE_REASONS, cfg.id is None
    duplicate = ING.duplicate_reason(extra.get("hashed_ids", False))
    tune_session(spark, input_bytes(spark, cfg.input) if "://" not in cfg.input or cfg.input.startswith("file:") else 0)
    manifest, seen, written = ING.observed_manifest(flagged, reasons, counters)
    with atomic_output(spark, f"{cfg.out.rstrip('/')}/manifest.parquet") as tmp:
        manifest.write.parquet(tmp)
        stats = ING.tally(seen, written, reasons, duplicate, counters)
        if stats["rows_written"] == 0:  # raised inside: nothing is committed
            raise ValueError(f"{cfg.input}: no usable rows ({stats['rows_read']} read; dropped: "
                             f"{ {k: v for k, v in stats['rows_dropped'].items() if v} })")
    stats = {"input": cfg.input, "format": cfg.format, **extra, **stats,
             **{k: {m: int(v) for m, v in o.get.items()} for k, o in observed.items()},
             "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}}
    write_stats(spark, cfg.out, stats)
    return stats


def write_stats(spark, out: str, stats: dict) -> None:
    """stats.json, last: atomically on a local path, through Hadoop's FileSystem elsewhere."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", out) and not out.startswith("file://"):
        write_json(spark, f"{out.rstrip('/')}/stats.json", stats)
    else:
        write_text_atomic(Path(out.removeprefix("file://")) / "stats.json",
                          json.dumps(stats, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(IngestConfig, argv, __doc__.splitlines()[0])
    spark = get_session("ingest", cfg.master)
    with reported("ingest"):
        stats = run(spark, cfg)
    print(f"ingest: {stats['rows_written']} of {stats['rows_read']} rows ({cfg.format}); dropped "
          f"{ {k: v for k, v in stats['rows_dropped'].items() if v} } -> {cfg.out}/manifest.parquet")
    return stats


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
