"""DataFrame transforms of the shards job.

Phase 1 prepares each unique image once (resampling repeats head images several times);
phase 2 numbers the accepted samples densely in position order and writes one tar per shard
from the executors. Shards are idempotent units: a shard whose file matches its sidecar's
sha256 is skipped on a rerun.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.lib.numbering import number_rows
from pipeline.atomic import write_text_atomic
from pipeline.images import ImageRejected, ImageSpec, prepare_image, read_image_bytes
from pipeline.wds import file_sha256, shard_name, write_shard

PREPARED_SCHEMA = "image_id string, jpeg binary, width int, height int, reason string, detail string"
SHARD_STATS_SCHEMA = ("shard long, name string, samples long, bytes long, sha256 string, "
                      "first_position long, last_position long, first_key long, skipped boolean")
SIDECARS = "_shards"  # per-shard JSON written after its tar: the idempotence record


def prepare_unique(samples: DataFrame, spec: ImageSpec, image_root: str | None) -> DataFrame:
    """(image_id, jpeg, width, height, reason, detail) once per distinct image_id."""
    def fn(batches):
        for b in batches:
            ids, images = b.column(0).to_pylist(), b.column(1).to_pylist()
            cols = {k: [] for k in ("image_id", "jpeg", "width", "height", "reason", "detail")}
            for image_id, image in zip(ids, images):
                jpeg = w = h = reason = detail = None
                try:
                    jpeg, w, h = prepare_image(read_image_bytes(image, image_root), spec)
                except ImageRejected as e:
                    reason, detail = e.reason, e.detail[:300]
                for k, v in zip(cols, (image_id, jpeg, w, h, reason, detail)):
                    cols[k].append(v)
            yield pa.RecordBatch.from_pydict(cols, schema=pa.schema([
                ("image_id", pa.string()), ("jpeg", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
                ("reason", pa.string()), ("detail", pa.string())]))
    unique = samples.select("image_id", "image").dropDuplicates(["image_id"])
    return unique.mapInArrow(fn, PREPARED_SCHEMA)


def keyed_samples(samples: DataFrame, prepared: DataFrame, shard_size: int) -> tuple[DataFrame, DataFrame]:
    """(accepted samples with dense `key` and `shard`, rejected samples with their reason)."""
    joined = samples.select("position", "image_id", "labels", "tail").join(prepared, "image_id")
    rejects = joined.filter(F.col("reason").isNotNull()).select("position", "image_id", "reason", "detail")
    ok = joined.filter(F.col("reason").isNull()).drop("reason", "detail")
    ok = number_rows(ok, ["position"], (F.col("position") / F.lit(1_000_000)).cast("long"), "key")
    return ok.withColumn("shard", (F.col("key") / F.lit(shard_size)).cast("long")), rejects


def write_shards(keyed: DataFrame, out_dir: str) -> DataFrame:
    """One tar per shard, written by the executors; a row of shard stats per shard."""
    def fn(t: pa.Table) -> pa.Table:
        t = t.sort_by("key")
        shard = t["shard"][0].as_py()
        name = shard_name(shard)
        path, sidecar = Path(out_dir) / name, Path(out_dir) / SIDECARS / f"{name}.json"
        expect = {"samples": t.num_rows, "first_position": t["position"][0].as_py(),
                  "last_position": t["position"][-1].as_py(), "first_key": t["key"][0].as_py()}
        prev = _read_json(sidecar)
        if prev and path.exists() and all(prev.get(k) == v for k, v in expect.items()) \
                and file_sha256(path) == prev.get("sha256"):
            rec, skipped = prev, True
        else:
            rows = zip(t["key"].to_pylist(), t["jpeg"].to_pylist(), t["image_id"].to_pylist(),
                       t["labels"].to_pylist(), t["tail"].to_pylist(), t["position"].to_pylist())
            written = write_shard(path, ((f"{k:09d}", jpeg, {"image_id": i, "labels": lb, "tail": tl, "position": p})
                                         for k, jpeg, i, lb, tl, p in rows))
            rec, skipped = {**expect, **written, "name": name}, False
            write_text_atomic(sidecar, json.dumps(rec, sort_keys=True))
        return pa.table({"shard": [shard], "name": [name], "samples": [rec["samples"]], "bytes": [rec["bytes"]],
                         "sha256": [rec["sha256"]], "first_position": [rec["first_position"]],
                         "last_position": [rec["last_position"]], "first_key": [rec["first_key"]],
                         "skipped": [skipped]})
    return keyed.groupBy("shard").applyInArrow(fn, SHARD_STATS_SCHEMA)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
