"""WebDataset tar shards and an FFCV .beton of every labelled image, each stored once.

    spark-submit jobs/shards.py --labeled build/demo/labeled --out build/demo/shards \
        [--format wds,ffcv] [--shard-size 1000] [--max-side 320] [--quality 90] [--image-root DIR]

One pass: images are grouped into shards by a hash of image_id (only references, labels and
texts cross the shuffle), and each shard's writer reads (pipeline/image_reader.py: local paths,
s3/gs/az/http(s) URLs and tar members, batched and concurrent, transient failures retried and
counted in stats.json's read_retries), prepares and writes its own images (members
`<slot>.jpg` + `<slot>.json` with image_id, labels, tail, and "text" where labeled.parquet has a
text column: the first of schemas.TEXT_COLUMNS present, passed through from the manifest by
jobs/label.py; a null text is ""; shards.json's "text" names that column, or is null). Bad
images go to OUT/rejects.parquet with a reason. OUT/images.parquet maps image_id -> `image` (the
stored-image index: dense in shard order, the same in the .beton), shard and ordinal. Which samples an epoch trains on is a
sample index (jobs/resample.py --shards OUT), applied by the loaders: resampling never rewrites
shards. The class count (shards.json's num_classes) is the one labeled.parquet's labels column
records. shards.json, stats.json (with images_with_text: stored images with a non-empty text)
and _SUCCESS are written last. A rerun skips a shard only when everything that determines its
bytes (images, labels, texts, image settings) is unchanged.
OUT must be a POSIX path every executor can write (local disk or a shared filesystem).
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

import schemas  # noqa: E402
from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.errors import reported  # noqa: E402
from jobs.lib.output import atomic_output  # noqa: E402
from jobs.lib.session import get_session, input_bytes, tune_session  # noqa: E402
from jobs.lib.sharding import SIDECARS, slotted, write_shards  # noqa: E402
from jobs.lib.tables import check_label_range, class_count, read_checked  # noqa: E402
from pipeline.atomic import write_text_atomic  # noqa: E402
from pipeline.ffcv_writer import require_ffcv, write_beton  # noqa: E402
from pipeline.image_reader import ReadPolicy  # noqa: E402
from pipeline.images import REJECT_REASONS, ImageSpec  # noqa: E402
from pipeline.wds import shard_name  # noqa: E402
from schemas.shard_set import SHARD_SET_FILE, ShardSetMeta, shard_set_file  # noqa: E402

FORMATS = ("wds", "ffcv")


@dataclass(frozen=True)
class ShardsConfig:
    labeled: str = field(metadata={"help": "output directory of jobs/label.py"})
    out: str = field(metadata={"help": "shard directory (local or shared POSIX path)"})
    format: tuple[str, ...] = field(default=("wds",), metadata={"help": "comma-separated: wds,ffcv"})
    shard_size: int = field(default=1000, metadata={"help": "images per tar shard (fewer where images are rejected)"})
    max_side: int = field(default=320, metadata={"help": "shorter side at most this many pixels"})
    quality: int = field(default=90, metadata={"help": "JPEG quality"})
    max_pixels: int | None = field(default=None, metadata={"help": "reject larger images (default: Pillow's guard)"})
    image_root: str | None = field(default=None, metadata={"help": "resolve relative image references against this "
                                                                   "(a path or a URL: s3://bucket/prefix)"})
    read_concurrency: int = field(default=ReadPolicy.concurrency,
                                  metadata={"help": "remote image reads in flight per task"})
    read_attempts: int = field(default=ReadPolicy.attempts,
                               metadata={"help": "tries of a transiently failing image read"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's)"})

    def __post_init__(self):
        bad = [f for f in self.format if f not in FORMATS]
        if bad or not self.format:
            raise ValueError(f"unknown --format {','.join(bad)}; valid: {', '.join(FORMATS)}")
        if self.shard_size < 1:
            raise ValueError("--shard-size must be >= 1")
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.out) and not self.out.startswith("file://"):
            raise ValueError(f"--out {self.out}: shards are written by executors to a POSIX path")
        ImageSpec(self.max_side, self.quality, self.max_pixels)
        ReadPolicy(concurrency=self.read_concurrency, attempts=self.read_attempts)


def run(spark, cfg: ShardsConfig) -> dict:
    if "ffcv" in cfg.format:
        require_ffcv()  # before any work
    spec = ImageSpec(cfg.max_side, cfg.quality, cfg.max_pixels)
    out = Path(cfg.out.removeprefix("file://"))
    where = f"{cfg.labeled}/labeled.parquet"
    labeled = read_checked(spark, where, schemas.LABELED.remove(1))
    tune_session(spark, input_bytes(spark, where))
    num_classes, vocabulary = class_count(labeled, where)  # C: the vocabulary's, via the label job
    check_label_range(labeled.select("labels"), num_classes, where, vocabulary)
    text = schemas.text_column(labeled.columns)
    if text is not None and labeled.schema[text].dataType.simpleString() != "string":
        raise ValueError(f"{where}: text column {text!r} is {labeled.schema[text].dataType.simpleString()}, "
                         "expected string")
    out.mkdir(parents=True, exist_ok=True)
    for marker in ("_SUCCESS", SHARD_SET_FILE, "stats.json"):  # nothing may look complete meanwhile
        (out / marker).unlink(missing_ok=True)
    remove_temp_files(out)  # of writers killed in an earlier run

    policy = ReadPolicy(concurrency=cfg.read_concurrency, attempts=cfg.read_attempts)
    outcomes = write_shards(slotted(labeled, cfg.shard_size, text), str(out), spec, cfg.image_root, policy).cache()
    shard_rows = sorted((r.asDict() for r in outcomes.filter(F.col("image_id").isNull()).collect()),
                        key=lambda r: r["shard"])  # one row per shard
    remove_temp_files(out)  # of task attempts killed in this run (lost executors, speculative losers)
    listed = [r for r in shard_rows if r["ordinal"] > 0]  # no empty shard is listed
    meta = ShardSetMeta.numbered(num_classes, [(shard_name(r["shard"]), r["ordinal"], r["bytes"], r["sha256"])
                                               for r in listed],
                                 shard_size=cfg.shard_size, max_side=cfg.max_side, quality=cfg.quality, text=text)
    names = {s.name for s in meta.shards}
    for stale in out.glob("shard-*.tar"):  # left by an earlier run with other images or settings
        if stale.name not in names:
            stale.unlink()
            (out / SIDECARS / f"{stale.name}.json").unlink(missing_ok=True)
    per_image = outcomes.filter(F.col("image_id").isNotNull())
    offsets = spark.createDataFrame([(r["shard"], s.first_image) for r, s in zip(listed, meta.shards)] or [(-1, 0)],
                                    "shard long, first_image long")
    with atomic_output(spark, str(out / "images.parquet")) as tmp:
        (per_image.filter(F.col("reason").isNull()).join(F.broadcast(offsets), "shard")
         .select("image_id", (F.col("first_image") + F.col("ordinal")).alias("image"), "shard", "ordinal")
         .write.parquet(tmp))
    with atomic_output(spark, str(out / "rejects.parquet")) as tmp:
        per_image.filter(F.col("reason").isNotNull()).select("image_id", "reason", "detail").write.parquet(tmp)
    by_reason = {r["reason"]: r["count"] for r in
                 per_image.filter(F.col("reason").isNotNull()).groupBy("reason").count().collect()}
    meta = replace(meta, rejected_images={k: by_reason.get(k, 0) for k in REJECT_REASONS})
    if "ffcv" in cfg.format:
        label_pad = labeled.select(F.max(F.size("labels"))).first()[0] or 1
        meta = replace(meta, ffcv=write_beton([str(out / s.name) for s in meta.shards], str(out / "images.beton"),
                                              label_pad, cfg.quality, num_workers=os.cpu_count() or 1))
    stats = {**meta.to_dict(), "images_in": sum(r["ordinal"] for r in shard_rows) + sum(by_reason.values()),
             "shards_written": sum(not s["skipped"] for s in listed),
             "shards_skipped": sum(s["skipped"] for s in listed), "config": vars(cfg),
             "images_with_text": sum(r["with_text"] for r in shard_rows),
             "read_retries": sum(r["read_retries"] for r in shard_rows)}
    stats["shards"] = len(listed)
    outcomes.unpersist()
    write_text_atomic(shard_set_file(out), meta.to_json())
    write_text_atomic(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True, default=list))
    write_text_atomic(out / "_SUCCESS", "")
    return stats


def remove_temp_files(out: Path) -> None:
    """Delete the temporary tars and sidecars of killed writers. A writer still alive then
    (a speculative loser not yet killed) can only fail its rename or rename the same bytes."""
    for orphan in [*out.glob(".*.tmp"), *(out / SIDECARS).glob(".*.tmp")]:
        orphan.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ShardsConfig, argv, __doc__.splitlines()[0])
    with reported("shards"):
        stats = run(get_session("shards", cfg.master), cfg)
    print(f"shards: {stats['images']} of {stats['images_in']} images in {stats['shards']} shards "
          f"({stats['shards_written']} written, {stats['shards_skipped']} unchanged); rejected: "
          f"{ {k: v for k, v in stats['rejected_images'].items() if v} } -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
