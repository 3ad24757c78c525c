"""The dedup job's embedding method: CNN/ViT embeddings, random-hyperplane LSH candidates, cosine.

Each image (and each crop/mirror variant of an evaluation image) is embedded by a frozen trunk
(an export of trainer.pretrain, or `random:<timm name>`; nothing is downloaded) with the
evaluation transform. Embeddings are centred on the mean whole-image embedding of both sides and
scaled to unit length; candidates share a SimHash key in one of the tables
(pipeline/simhash.py); a candidate is confirmed by its cosine distance 1 - cos.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.images import ImageRejected, read_image_bytes
from pipeline.phash import MIN_SET_BITS, Box, decode_rgb, low_information, phash_pair
from pipeline.simhash import SimHashTables, centred_unit
from schemas import MANIFEST_ID, MANIFEST_IMAGE

EMBEDDED = "variant int, flipped boolean, embedding array<float>, reason string, detail string"
_TRUNKS: dict = {}  # (spec, img_size) -> (trunk, mean, std), once per Python worker


def _trunk(spec: str, img_size: int):
    import torch

    from trainer.export import load_model

    if (spec, img_size) not in _TRUNKS:
        torch.set_num_threads(1)  # one Spark task per core already
        m = load_model(spec, img_size=img_size)
        mean = torch.tensor(m.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(m.std).view(1, 3, 1, 1) * 255
        _TRUNKS[(spec, img_size)] = (m.trunk.eval(), mean, std)
    return _TRUNKS[(spec, img_size)]


def _variants(rgb, crops: list[Box], flips: bool, img_size: int):
    """(variant, flipped, uint8 [3, S, S]) per crop box (fractions cut per side) and mirror."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from trainer.data.transforms import eval_transform

    tf = eval_transform(img_size)
    w, h = rgb.size
    for i, (l, t, r, b) in enumerate(crops):
        im = rgb.crop((round(l * w), round(t * h), w - round(r * w), h - round(b * h))) if any((l, t, r, b)) else rgb
        yield i, False, tf(TF.pil_to_tensor(im))
        if flips:
            yield i, True, tf(TF.pil_to_tensor(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def embed_images(df: DataFrame, keys: list[str], crops: list[Box], flips: bool, model: str, img_size: int,
                 image_root: str | None, min_set_bits: int = MIN_SET_BITS, batch_size: int = 64) -> DataFrame:
    """keys + (variant, flipped, embedding, reason, detail): one row per variant of each readable
    image; unreadable and low-information images (the pHash rule) get one row with a reason."""
    nk = len(keys)
    schema = pa.schema([(k, pa.string()) for k in keys] + [
        ("variant", pa.int32()), ("flipped", pa.bool_()), ("embedding", pa.list_(pa.float32())),
        ("reason", pa.string()), ("detail", pa.string())])

    def fn(batches):
        import torch

        trunk, mean, std = _trunk(model, img_size)
        for b in batches:
            cols = [b.column(i).to_pylist() for i in range(nk + 1)]
            rows, pixels = [], []  # rows: (key values, variant, flipped, index into pixels | reason, detail)
            for row in zip(*cols):
                try:
                    rgb = decode_rgb(read_image_bytes(row[nk], image_root), max(128, 2 * img_size))
                    h = phash_pair(rgb)[0]
                    if low_information(h, min_set_bits):
                        n = bin(h).count("1")
                        rows.append((row[:nk], None, None, None, "low_information", f"{n} of 63 hash bits set"))
                        continue
                    for v, flipped, x in _variants(rgb, crops, flips, img_size):
                        rows.append((row[:nk], v, flipped, len(pixels), None, None))
                        pixels.append(x)
                except ImageRejected as e:
                    rows.append((row[:nk], None, None, None, e.reason, e.detail[:300]))
            emb = []
            with torch.inference_mode():
                for s in range(0, len(pixels), batch_size):
                    x = torch.stack(pixels[s:s + batch_size]).float().sub_(mean).div_(std)
                    emb.append(trunk(x).float().numpy())
            emb = np.concatenate(emb) if emb else np.zeros((0, 0), np.float32)
            out = {k: [] for k in schema.names}
            for key_values, v, flipped, idx, reason, detail in rows:
                for k, val in zip(keys, key_values):
                    out[k].append(val)
                out["variant"].append(v)
                out["flipped"].append(flipped)
                out["embedding"].append(None if idx is None else emb[idx].tolist())
                out["reason"].append(reason)
                out["detail"].append(detail)
            yield pa.RecordBatch.from_pydict(out, schema=schema)

    schema_ddl = ", ".join(f"{k} string" for k in keys) + ", " + EMBEDDED
    return df.select(*keys, MANIFEST_IMAGE).mapInArrow(fn, schema_ddl)


def mean_embedding(*embedded: DataFrame) -> np.ndarray:
    """The mean whole-image (variant 0, unflipped) embedding over the given tables."""
    whole = [e.filter((F.col("variant") == 0) & ~F.col("flipped")).select("embedding") for e in embedded]
    u = whole[0]
    for w in whole[1:]:
        u = u.unionByName(w)
    rows = u.select(F.posexplode("embedding")).groupBy("pos").agg(F.avg("col").alias("m")).collect()
    if not rows:
        return np.zeros(0, np.float32)
    m = np.zeros(max(r["pos"] for r in rows) + 1, np.float32)
    for r in rows:
        m[r["pos"]] = r["m"]
    return m


def lsh_keys(embedded: DataFrame, mean: np.ndarray, tables: SimHashTables) -> DataFrame:
    """Readable rows with `embedding` centred and unit-length and `keys` (one SimHash key per table)."""
    ok = embedded.filter(F.col("embedding").isNotNull())
    fields = [(n, t) for n, t in ok.dtypes if n != "embedding"]
    ddl = ", ".join(f"{n} {t}" for n, t in fields) + ", embedding array<float>, keys array<bigint>"

    def fn(batches):
        planes = tables.planes(len(mean))  # rebuilt from the seed on each executor: nothing to ship
        for b in batches:
            if b.num_rows == 0:
                continue
            x = np.stack(b.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
            unit = centred_unit(x, mean)
            out = {n: b.column(n) for n, _ in fields}
            out["embedding"] = pa.array(list(unit), pa.list_(pa.float32()))
            out["keys"] = pa.array(list(tables.keys(unit, planes)), pa.list_(pa.int64()))
            yield pa.RecordBatch.from_pydict(out)

    return ok.mapInArrow(fn, ddl)


def _dot(a: str, b: str) -> F.Column:
    return F.aggregate(F.zip_with(F.col(a), F.col(b), lambda x, y: x * y), F.lit(0.0).cast("double"),
                       lambda acc, v: acc + v)


def candidate_pairs(pre_keyed: DataFrame, eval_keyed: DataFrame) -> DataFrame:
    """(pretrain_id, eval_set, eval_id, distance, flipped, variant, band): every pair sharing a
    key in some table, once, with its smallest cosine distance over the evaluation image's
    variants (ties: unflipped first, then the smaller crop index); band = the lowest shared table."""
    pk = pre_keyed.select(F.col(MANIFEST_ID).alias("pretrain_id"), F.posexplode("keys").alias("band", "key"))
    ek = eval_keyed.select("eval_set", F.col(MANIFEST_ID).alias("eval_id"), "variant", "flipped",
                           F.posexplode("keys").alias("band", "key"))
    shared = (pk.join(ek, ["band", "key"])
              .groupBy("pretrain_id", "eval_set", "eval_id", "variant", "flipped").agg(F.min("band").alias("band")))
    pe = pre_keyed.select(F.col(MANIFEST_ID).alias("pretrain_id"), F.col("embedding").alias("pe"))
    ee = eval_keyed.select("eval_set", F.col(MANIFEST_ID).alias("eval_id"), "variant", "flipped",
                           F.col("embedding").alias("ee"))
    scored = (shared.join(pe, "pretrain_id").join(ee, ["eval_set", "eval_id", "variant", "flipped"])
              .withColumn("distance", (F.lit(1.0) - _dot("pe", "ee")).cast("float")))
    best = F.min(F.struct("distance", "flipped", "variant", "band")).alias("best")
    return (scored.groupBy("pretrain_id", "eval_set", "eval_id").agg(best)
            .select("pretrain_id", "eval_set", "eval_id", F.col("best.distance").alias("distance"),
                    "best.flipped", "best.variant", F.col("best.band").cast("int").alias("band")))
