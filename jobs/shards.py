"""WebDataset tar shards and an FFCV .beton from the resampled sample index.

    spark-submit jobs/shards.py --samples build/demo/samples --out build/demo/shards \
        [--format wds,ffcv] [--shard-size 1000] [--max-side 320] [--quality 90] [--image-root DIR]

Each unique image is decoded and prepared once; bad images go to OUT/rejects.parquet with a
reason. The class count (shards.json's num_classes) is the one samples.parquet's labels column
records: the vocabulary's size, carried there by jobs/label.py and jobs/resample.py. Shards
hold the accepted samples in position order with contiguous keys; shards.json, stats.json and
_SUCCESS are written last. Reruns skip shards whose sha256 matches.
OUT must be a POSIX path every executor can write (local disk or a shared filesystem).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

import schemas  # noqa: E402
from jobs.lib.config import parse_config  # noqa: E402
from jobs.lib.output import atomic_output, read_text  # noqa: E402
from jobs.lib.session import get_session  # noqa: E402
from jobs.lib.sharding import SIDECARS, keyed_samples, prepare_unique, write_shards  # noqa: E402
from jobs.lib.tables import check_label_range, class_count, read_checked  # noqa: E402
from pipeline.atomic import write_text_atomic  # noqa: E402
from pipeline.ffcv_writer import require_ffcv, write_beton  # noqa: E402
from pipeline.images import REJECT_REASONS, ImageSpec  # noqa: E402

FORMATS = ("wds", "ffcv")


@dataclass(frozen=True)
class ShardsConfig:
    samples: str = field(metadata={"help": "output directory of jobs/resample.py"})
    out: str = field(metadata={"help": "shard directory (local or shared POSIX path)"})
    format: tuple[str, ...] = field(default=("wds",), metadata={"help": "comma-separated: wds,ffcv"})
    shard_size: int = field(default=1000, metadata={"help": "samples per tar shard"})
    max_side: int = field(default=320, metadata={"help": "shorter side at most this many pixels"})
    quality: int = field(default=90, metadata={"help": "JPEG quality"})
    max_pixels: int | None = field(default=None, metadata={"help": "reject larger images (default: Pillow's guard)"})
    image_root: str | None = field(default=None, metadata={"help": "resolve relative image paths against this"})
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


def run(spark, cfg: ShardsConfig) -> dict:
    if "ffcv" in cfg.format:
        require_ffcv()  # before any work
    spec = ImageSpec(cfg.max_side, cfg.quality, cfg.max_pixels)
    out = Path(cfg.out.removeprefix("file://"))
    sample_stats = json.loads(read_text(spark, f"{cfg.samples}/stats.json"))  # the prepared images' fingerprint
    where = f"{cfg.samples}/samples.parquet"
    samples = read_checked(spark, where, schemas.SAMPLES.remove(2))
    num_classes, vocabulary = class_count(samples, where)  # C: the vocabulary's, via label and resample
    check_label_range(samples, num_classes, where, vocabulary)
    out.mkdir(parents=True, exist_ok=True)
    for marker in ("_SUCCESS", "shards.json", "stats.json"):  # nothing may look complete meanwhile
        (out / marker).unlink(missing_ok=True)
    for orphan in [*out.glob(".*.tmp"), *(out / SIDECARS).glob(".*.tmp")]:  # of writers killed earlier
        orphan.unlink(missing_ok=True)

    fingerprint = hashlib.sha256(json.dumps([sample_stats, vars(spec), cfg.image_root], sort_keys=True,
                                            default=str).encode()).hexdigest()
    prepared_dir = out / "_prepared"
    if _read(prepared_dir / "_fingerprint") != fingerprint:
        with atomic_output(spark, str(prepared_dir)) as tmp:
            prepare_unique(samples, spec, cfg.image_root).write.parquet(f"{tmp}/images.parquet")
            Path(tmp.removeprefix("file:")).joinpath("_fingerprint").write_text(fingerprint)
    prepared = spark.read.parquet(str(prepared_dir / "images.parquet"))
    keyed, rejects = keyed_samples(samples, prepared, cfg.shard_size)
    keyed = keyed.cache()
    shard_rows = sorted((r.asDict() for r in write_shards(keyed, str(out)).collect()), key=lambda r: r["shard"])
    for stale in out.glob("shard-*.tar"):  # left by an earlier run with more shards
        if int(stale.stem.split("-")[1]) >= len(shard_rows):
            stale.unlink()
            (out / SIDECARS / f"{stale.name}.json").unlink(missing_ok=True)
    with atomic_output(spark, str(out / "rejects.parquet")) as tmp:
        rejects.orderBy("position").write.parquet(tmp)
    by_reason = {r["reason"]: (r["samples"], r["images"]) for r in rejects.groupBy("reason").agg(
        F.count("*").alias("samples"), F.countDistinct("image_id").alias("images")).collect()}
    n_ok = sum(r["samples"] for r in shard_rows)
    index = {"num_classes": num_classes, "samples": n_ok, "shard_size": cfg.shard_size,
             "max_side": cfg.max_side,
             "shards": [{k: r[k] for k in ("name", "samples", "bytes", "sha256", "first_position", "last_position")}
                        for r in shard_rows],
             "rejected_samples": {k: by_reason.get(k, (0, 0))[0] for k in REJECT_REASONS},
             "rejected_images": {k: by_reason.get(k, (0, 0))[1] for k in REJECT_REASONS}}
    if "ffcv" in cfg.format:
        label_pad = keyed.select(F.max(F.size("labels"))).first()[0] or 1
        index["ffcv"] = write_beton([str(out / r["name"]) for r in shard_rows], str(out / "samples.beton"),
                                    label_pad, cfg.quality, num_workers=os.cpu_count() or 1)
    stats = {**index, "samples_in": samples.count(), "shards_written": sum(not r["skipped"] for r in shard_rows),
             "shards_skipped": sum(r["skipped"] for r in shard_rows), "config": vars(cfg)}
    stats["shards"] = len(shard_rows)
    write_text_atomic(out / "shards.json", json.dumps(index, indent=2, sort_keys=True))
    write_text_atomic(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True, default=list))
    write_text_atomic(out / "_SUCCESS", "")
    return stats


def _read(p: Path):
    try:
        return p.read_text()
    except OSError:
        return None


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ShardsConfig, argv, __doc__.splitlines()[0])
    stats = run(get_session("shards", cfg.master), cfg)
    print(f"shards: {stats['samples']} of {stats['samples_in']} samples in {stats['shards']} shards "
          f"({stats['shards_written']} written, {stats['shards_skipped']} unchanged); rejected: "
          f"{ {k: v for k, v in stats['rejected_samples'].items() if v} } -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
