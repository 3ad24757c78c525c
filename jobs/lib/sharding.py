"""DataFrame transforms of the shards job: every labelled image stored once, in one pass.

Images are ordered by a hash of image_id (a seeded-free, content-derived order, so each shard is
a random slice of the corpus) and numbered densely (`slot`); slot // shard_size is the shard.
Only the small rows (image_id, path, labels, tail, and the text where labeled.parquet has a
text column) cross the one shuffle that groups a shard; its writer reads, prepares and writes
the image bytes itself. A sample's text goes into its .json as "text" (a null text as ""); a
table without a text column gives .json without that key, byte for byte as before. A shard is
an idempotent unit: its sidecar records a fingerprint of everything that determines its bytes
(the images, their labels and texts, the image settings), and a rerun skips a shard only when
that fingerprint and the tar's sha256 match.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.lib.fault_injection import inject
from jobs.lib.numbering import number_rows
from pipeline.atomic import write_text_atomic
from pipeline.image_reader import ReadPolicy, iter_images
from pipeline.images import DECODER_VERSION, ImageRejected, ImageSpec, prepare_image
from pipeline.wds import Sample, file_sha256, shard_name, write_shard

SIDECARS = "_shards"  # per-shard JSON written after its tar: the idempotence record
TEXT = "text"  # the sample .json key (and slotted's column) of an image's text
# one row per image (image_id set) and one per shard (image_id null: ordinal = images stored,
# with_text = stored images with a non-empty text, read_retries = transient read failures retried
# when it was written; null per image)
OUTCOME_SCHEMA = ("shard long, ordinal long, image_id string, reason string, detail string, "
                  "bytes long, sha256 string, skipped boolean, with_text long, read_retries long")
_OUTCOME_ARROW = pa.schema([("shard", pa.int64()), ("ordinal", pa.int64()), ("image_id", pa.string()),
                            ("reason", pa.string()), ("detail", pa.string()), ("bytes", pa.int64()),
                            ("sha256", pa.string()), ("skipped", pa.bool_()), ("with_text", pa.int64()),
                            ("read_retries", pa.int64())])
_HASH = "_order_hash"


def slotted(labeled: DataFrame, shard_size: int, text_column: str | None = None) -> DataFrame:
    """(image_id, image, labels, tail[, text], slot, shard): dense slots in (hash of image_id,
    image_id) order; `text` is labeled's `text_column` (null as "") when one is named."""
    cols = [F.col(c) for c in ("image_id", "image", "labels", "tail")]
    if text_column is not None:
        cols.append(F.coalesce(F.col(text_column), F.lit("")).alias(TEXT))
    rows = labeled.select(*cols).withColumn(_HASH, F.xxhash64(F.lit("shard"), "image_id"))
    # coarse ranges for the dense numbering: the hash's top 12 bits (4,096 ranges, one small row each)
    numbered = number_rows(rows, [_HASH, "image_id"], F.shiftright(F.col(_HASH), 52), "slot")
    return numbered.drop(_HASH).withColumn("shard", (F.col("slot") / F.lit(shard_size)).cast("long"))


def fingerprint(t: pa.Table, spec: ImageSpec, image_root: str | None) -> str:
    """sha256 of what determines a shard's bytes: its images in slot order, their labels, tail
    flags and texts (where `t` has a text column: without one, the fingerprint is the one a
    text-free table always had), the image settings, where relative paths resolve and the
    decoder's version (a decoder change that moves pixels rewrites every shard once)."""
    h = hashlib.sha256(json.dumps([vars(spec), image_root, DECODER_VERSION], sort_keys=True).encode())
    for row in zip(*(t[c].to_pylist() for c in _row_columns(t))):
        h.update(json.dumps(row, default=_bytes_digest).encode())  # a string row's text is as it always was
    return h.hexdigest()


def _bytes_digest(value):
    """An image given as bytes (img2dataset's parquet format) enters the fingerprint by its sha256."""
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _row_columns(t: pa.Table) -> list[str]:
    return ["slot", "image_id", "image", "labels", "tail", *([TEXT] if TEXT in t.column_names else [])]


def write_shards(rows: DataFrame, out_dir: str, spec: ImageSpec, image_root: str | None,
                 policy: ReadPolicy = ReadPolicy()) -> DataFrame:
    """One tar per shard, written by the executors: OUTCOME_SCHEMA rows (per image, per shard);
    images read by pipeline.image_reader with `policy`."""
    def fn(t: pa.Table) -> pa.Table:
        t = t.sort_by("slot")
        if TEXT in t.column_names:  # slotted's rows have no null text; rows built elsewhere may
            t = t.set_column(t.column_names.index(TEXT), TEXT, pc.fill_null(t[TEXT].cast(pa.string()), ""))
        shard = t["shard"][0].as_py()
        name = shard_name(shard)
        path, sidecar = Path(out_dir) / name, Path(out_dir) / SIDECARS / f"{name}.json"
        fp = fingerprint(t, spec, image_root)
        prev = _read_json(sidecar)
        ids = t["image_id"].to_pylist()
        if prev and prev.get("fingerprint") == fp and (prev["images"] == 0 or (
                path.exists() and file_sha256(path) == prev.get("sha256"))):
            rec, skipped = prev, True
        else:
            rec, skipped = _write(t, path, spec, image_root, policy), False
            rec["fingerprint"] = fp
            if rec["images"] == 0:
                path.unlink(missing_ok=True)  # every image rejected: no tar, none left from before
            write_text_atomic(sidecar, json.dumps(rec, sort_keys=True))
        rejected = {i: (r, d) for i, r, d in rec["rejects"]}
        texts = t[TEXT].to_pylist() if TEXT in t.column_names else [""] * len(ids)
        out = {k: [] for k in _OUTCOME_ARROW.names}
        n = with_text = 0
        for image_id, text in zip(ids, texts):
            reason, detail = rejected.get(image_id, (None, None))
            _append(out, shard, n if reason is None else -1, image_id, reason, detail)
            n += reason is None
            with_text += reason is None and bool(text)
        _append(out, shard, rec["images"], None, None, None, rec.get("bytes"), rec.get("sha256"), skipped, with_text,
                0 if skipped else rec.get("read_retries", 0))
        return pa.table(out, schema=_OUTCOME_ARROW)
    return rows.groupBy("shard").applyInArrow(fn, OUTCOME_SCHEMA)


def _append(out: dict, *values) -> None:
    for k, v in zip(out, (*values, *([None] * (len(out) - len(values))))):
        out[k].append(v)


def _write(t: pa.Table, path: Path, spec: ImageSpec, image_root: str | None, policy: ReadPolicy) -> dict:
    rejects, retries = [], [0]
    rows = zip(*(t[c].to_pylist() for c in _row_columns(t)))
    images = iter_images(t["image"].to_pylist(), image_root, policy)  # batched, concurrent where remote

    def members():
        for (slot, image_id, _, labels, tail, *text), (data, r) in zip(rows, images):
            retries[0] += r
            try:
                if isinstance(data, ImageRejected):
                    raise data
                jpeg, _, _ = prepare_image(data, spec)
            except ImageRejected as e:
                rejects.append([image_id, e.reason, e.detail[:300]])
                continue
            meta = {"image_id": image_id, "labels": labels, "tail": tail}
            yield Sample(f"{slot:012d}", jpeg, meta={**meta, TEXT: text[0]} if text else meta)
            inject("shards.write", t["shard"][0].as_py())  # test-only (jobs/lib/fault_injection.py): mid-tar
    written = write_shard(path, members())
    return {"images": written["samples"], "bytes": written["bytes"], "sha256": written["sha256"],
            "rejects": rejects, "name": path.name, "read_retries": retries[0]}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
