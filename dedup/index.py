"""The dedup job's search: the evaluation side indexed once, the pretraining side streamed past it.

`EvalIndex.build` takes the evaluation descriptors (one row per crop/mirror variant, collected to
the driver: the small side, by design) and builds a faiss index over them (dedup/ann.py).
`EvalIndex.shipped()` is what executors receive by broadcast: faiss's own serialisation and plain
arrays. `queried_batches` then decodes each pretraining image once, describes it and asks the
index for its nearest evaluation variants, in the same mapInArrow task (dedup/spark.py's
query_rows): no join on band keys, no shuffle of descriptors, and a cost per image set by the
index's search alone.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dedup.ann import IndexSpec, build_index, index_bytes, load_index, nearest_owners, search
from dedup.describe import Describer, chunked
from dedup.phash import MIN_SET_BITS
from pipeline.image_reader import read_images

NEAREST = "array<struct<eval_index:int, variant:int, flipped:boolean, distance:float>>"
QUERIED = f"pretrain_id string, reason string, detail string, nearest {NEAREST}"
_LOADED: dict = {}  # shipped token -> (faiss index, arrays), once per Python worker


def unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def post_transform(x: np.ndarray, mean: np.ndarray | None, projection: np.ndarray | None) -> np.ndarray:
    """Float descriptors as indexed: unit rows of (x - mean) @ projection (each part optional)."""
    x = np.asarray(x, np.float32)
    if mean is not None:
        x = x - mean
    if projection is not None:
        x = x @ projection
    return unit_rows(x)


@dataclass
class EvalIndex:
    kind: str
    spec: IndexSpec
    eval_set: list[str]          # per evaluation image (readable, judged)
    eval_id: list[str]
    owner: np.ndarray            # per indexed variant: its evaluation image (row of eval_set/eval_id)
    variant: np.ndarray          # crop index of the variant
    flipped: np.ndarray          # mirrored variant
    index: object                # the faiss index
    how: str                     # "flat" or "hnsw"
    mean: np.ndarray | None = None
    projection: np.ndarray | None = None

    @classmethod
    def build(cls, table: pa.Table, spec: IndexSpec, transform: str = "none", whiten_dim: int | None = None,
              threads: int | None = None, queries: int | None = None) -> "EvalIndex":
        """From describe_rows' output for the evaluation side (eval_set, image_id, variant, flipped,
        hash, vector, reason, detail). transform (float only): "none" (already unit vectors),
        "centre" (subtract the mean whole-image descriptor), "whiten" (PCA-whitening learned on the
        whole-image descriptors, dedup/rmac.py). `queries`: how many images will search it
        (dedup.ann.IndexSpec.resolved)."""
        ok = table.filter(pc.is_null(table.column("reason")))
        sets, ids = ok.column("eval_set").to_pylist(), ok.column("image_id").to_pylist()
        images: dict[tuple[str, str], int] = {}
        owner = np.array([images.setdefault(k, len(images)) for k in zip(sets, ids)], np.int32)
        variant = np.asarray(ok.column("variant").to_numpy(zero_copy_only=False), np.int32)
        flipped = np.asarray(ok.column("flipped").to_numpy(zero_copy_only=False), bool)
        mean = projection = None
        if spec.kind == "binary":
            x = np.asarray(ok.column("hash").to_numpy(zero_copy_only=False), np.int64)
        else:
            vecs = ok.column("vector").to_pylist()
            x = np.array(vecs, np.float32) if vecs else np.zeros((0, 1), np.float32)
            whole = (variant == 0) & ~flipped
            if transform == "centre" and whole.any():
                mean = x[whole].mean(0)
            elif transform == "whiten" and whole.sum() >= 2:
                from dedup.rmac import fit_whitening

                dim = min(whiten_dim or x.shape[1], x.shape[1], int(whole.sum()) - 1)
                w = fit_whitening(x[whole], dim)
                mean, projection = w.mean.astype(np.float32), w.projection.astype(np.float32)
            elif transform not in ("none", "centre", "whiten"):
                raise ValueError(f"unknown transform {transform!r}")
            x = post_transform(x, mean, projection)
        names = list(images)
        return cls(spec.kind, spec, [s for s, _ in names], [i for _, i in names], owner, variant, flipped,
                   build_index(x, spec, threads, queries), spec.resolved(len(x), queries), mean, projection)

    @property
    def variants(self) -> int:
        return len(self.owner)

    def shipped(self) -> dict:
        """Plain arrays and faiss's serialisation: the broadcast value (no faiss object, no pickle
        of anything but numpy arrays and strings)."""
        return {"token": uuid.uuid4().hex, "kind": self.kind, "ef_search": self.spec.ef_search,
                "index": index_bytes(self.index, self.kind), "owner": self.owner, "variant": self.variant,
                "flipped": self.flipped, "mean": self.mean, "projection": self.projection}


def _loaded(shipped: dict):
    import faiss

    token = shipped["token"]
    if token not in _LOADED:
        faiss.omp_set_num_threads(1)  # one Spark task per core already
        _LOADED.clear()
        _LOADED[token] = load_index(shipped["index"], shipped["kind"], shipped["ef_search"])
    return _LOADED[token]


def nearest_lists(x, shipped: dict, probe: int, k_variants: int) -> list[list[dict]]:
    """Per descriptor row of x (int64 hashes or raw float vectors), its `probe` nearest evaluation
    images as dicts (eval_index, variant, flipped, distance), nearest first."""
    index = _loaded(shipped)
    if shipped["kind"] == "float":
        x = post_transform(x, shipped["mean"], shipped["projection"])
    d, v = search(index, shipped["kind"], x, k_variants)
    q, o, vr, dist = nearest_owners(d, v, shipped["owner"], probe)
    lists = [[] for _ in range(len(d))]
    variant, flipped = shipped["variant"], shipped["flipped"]
    for qi, oi, vi, di in zip(q.tolist(), o.tolist(), vr.tolist(), dist.tolist()):
        lists[qi].append({"eval_index": oi, "variant": int(variant[vi]), "flipped": bool(flipped[vi]), "distance": di})
    return lists


def queried_batches(batches, id_col: str, image_col: str, describer: Describer, shipped: dict, probe: int,
                    k_variants: int, image_root: str | None, min_set_bits: int = MIN_SET_BITS):
    """Per Arrow batch of (id_col, image_col): (pretrain_id, reason, detail, nearest), per
    pretraining image its `probe` nearest evaluation images (by their nearest variant among the
    `k_variants` nearest variants), or the reason it was not judged (unreadable,
    low_information) with nearest null."""
    for b in chunked(batches):
        ids = b.column(id_col).to_pylist()
        rows, good, rgbs, hashes = [], [], [], []
        for i, data in enumerate(read_images(b.column(image_col).to_pylist(), image_root)[0]):
            rgb, h, rejected = describer.decode(data, min_set_bits)
            if rgb is None:
                rows.append((i, *rejected, None))
            else:
                good.append(i)
                rgbs.append(rgb)
                hashes.append(h)
        if good:
            lists = nearest_lists(describer.whole(rgbs, hashes), shipped, probe, k_variants)
            rows += [(i, None, None, lst) for i, lst in zip(good, lists)]
        rows.sort(key=lambda r: r[0])
        yield _queried_batch([ids[r[0]] for r in rows], rows)


def descriptor_query_batches(batches, id_col: str, descriptor_col: str, shipped: dict, probe: int,
                             k_variants: int):
    """queried_batches for descriptors computed elsewhere (a `hash` int64 or `vector` list<float>
    column): the same search, without decoding (bench/dedup_bench.py times the job's search so)."""
    for b in chunked(batches, 4096):
        col = b.column(descriptor_col)
        x = (np.asarray(col.to_numpy(zero_copy_only=False), np.int64) if shipped["kind"] == "binary"
             else np.stack(col.to_numpy(zero_copy_only=False)).astype(np.float32))
        lists = nearest_lists(x, shipped, probe, k_variants)
        yield _queried_batch(b.column(id_col).to_pylist(), [(i, None, None, lst) for i, lst in enumerate(lists)])


def _queried_batch(ids: list, rows: list) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"pretrain_id": ids, "reason": [r[1] for r in rows],
                                       "detail": [r[2] for r in rows], "nearest": [r[3] for r in rows]},
                                      schema=_QUERIED_ARROW)


_NEAREST_STRUCT = pa.struct([("eval_index", pa.int32()), ("variant", pa.int32()), ("flipped", pa.bool_()),
                             ("distance", pa.float32())])
_QUERIED_ARROW = pa.schema([("pretrain_id", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
                            ("nearest", pa.list_(_NEAREST_STRUCT))])


def top_k_per_eval_image(table: pa.Table, k: int) -> pa.Table:
    """The rows of (eval_index, distance, pretrain_id, ...) neighbour pairs that are among each
    evaluation image's k nearest (ties by pretrain_id)."""
    t = table.take(pc.sort_indices(table, [("eval_index", "ascending"), ("distance", "ascending"),
                                           ("pretrain_id", "ascending")]))
    e = t.column("eval_index").to_numpy()
    start = np.searchsorted(e, e, "left")
    return t.filter(pa.array((np.arange(len(e)) - start) < k))
