"""Nearest evaluation variants of pretraining descriptors, with faiss (pure, no Spark).

The dedup job indexes the small side, the evaluation images and their crop/mirror variants, once,
and every pretraining image queries that index: the cost per pretraining image depends on the
index's search, not on how many evaluation variants happen to collide with it (banding's join on
band keys made 50% of all openclipart pairs candidates).

Two kinds of descriptor:
- `binary`: a 63-bit pHash as 8 bytes; Hamming distance (faiss IndexBinaryFlat / IndexBinaryHNSW).
  Bit 63 is always 0, so the distance over 64 bits is the distance over 63.
- `float`: unit vectors (R-MAC, pooled embeddings); cosine distance 1 - <a, b> (IndexFlatIP /
  IndexHNSWFlat with inner product).

`flat` is exact: each query is compared with every indexed vector (linear in the index). `hnsw`
(Malkov & Yashunin 2018) walks a proximity graph: about log(n) hops, so the cost per query grows
far slower than the index, but building it costs time too. `auto` searches exhaustively when the
index is small (EXACT_MAX vectors) or when all the queries together cost less than FLAT_WORK
distance computations (a demo-sized manifest against a few hundred thousand variants: seconds,
against 16 s to build the graph), and uses HNSW otherwise (bench/dedup_bench.py measures both).

A query asks for `k_variants` nearest variants and keeps the nearest of each evaluation image
(`nearest_owners`): crops of one image crowd around each other, so several variants per image
are read to find a few distinct images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("binary", "float")
INDEXES = ("auto", "flat", "hnsw")
# Up to this many indexed vectors `auto` searches exhaustively (bench/dedup_bench.py, one thread:
# binary flat and HNSW cost about the same per query at 100k; float flat at 256-d is already 3x
# HNSW's cost at 10k, so exactness is kept only for small float indexes).
EXACT_MAX = {"binary": 100_000, "float": 5_000}
HASH_BITS = 64
# HNSW search list length by kind (bench/dedup_bench.py, recall of the pairs within the threshold
# against exact search at 1M variants: binary 0.995 at 128; float 0.969 at 128, 0.995 at 256)
EF_SEARCH = {"binary": 128, "float": 256}
# Queries x indexed vectors below which exhaustive search of every query is cheaper than building
# HNSW: about 25 s of one core (binary: 1.2 ns per Hamming distance; float: 25 ns per 256-d dot)
FLAT_WORK = {"binary": 2 * 10**10, "float": 10**9}


@dataclass(frozen=True)
class IndexSpec:
    kind: str                  # "binary" (pHash codes, Hamming) or "float" (unit vectors, cosine)
    index: str = "auto"        # "flat" (exact), "hnsw" (graph), "auto": flat up to EXACT_MAX vectors
    hnsw_m: int = 32           # graph degree (faiss M); 32 holds recall >= 0.99 at 1M pHash variants
    ef_construction: int = 80  # candidate list while building
    ef_search: int | None = None  # candidate list while searching: recall against time (None: EF_SEARCH[kind])

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; valid: {KINDS}")
        if self.index not in INDEXES:
            raise ValueError(f"unknown index {self.index!r}; valid: {INDEXES}")
        if self.ef_search is None:
            object.__setattr__(self, "ef_search", EF_SEARCH[self.kind])
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            if not 2 <= getattr(self, name) <= 4096:
                raise ValueError(f"{name} must be in [2, 4096], got {getattr(self, name)}")

    def resolved(self, n: int, queries: int | None = None) -> str:
        """"flat" or "hnsw" for an index of n vectors searched by `queries` queries (None: many)."""
        if self.index != "auto":
            return self.index
        if n <= EXACT_MAX[self.kind] or (queries is not None and n * queries <= FLAT_WORK[self.kind]):
            return "flat"
        return "hnsw"


def hash_codes(hashes) -> np.ndarray:
    """(n, 8) uint8 faiss binary codes of int64 pHash values (their little-endian bytes)."""
    h = np.ascontiguousarray(np.asarray(hashes, dtype=np.int64))
    return h.view(np.uint8).reshape(-1, 8)


def _as_float(vectors) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"float descriptors must be a 2-D array (n, dim), got shape {x.shape}")
    return x


def _prepared(vectors, kind: str) -> np.ndarray:
    return hash_codes(vectors) if kind == "binary" else _as_float(vectors)


def build_index(vectors, spec: IndexSpec, threads: int | None = None, queries: int | None = None):
    """A faiss index of `vectors` (int64 hashes for binary, (n, dim) floats for float) in row
    order: search ids are row numbers; `queries`: how many will search it (for `auto`)."""
    import faiss

    if threads is not None:
        faiss.omp_set_num_threads(threads)
    x = _prepared(vectors, spec.kind)
    how = spec.resolved(len(x), queries)
    if spec.kind == "binary":
        index = faiss.IndexBinaryFlat(HASH_BITS) if how == "flat" else faiss.IndexBinaryHNSW(HASH_BITS, spec.hnsw_m)
    else:
        d = x.shape[1]
        index = (faiss.IndexFlatIP(d) if how == "flat"
                 else faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT))
    if how == "hnsw":
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    if len(x):
        index.add(x)
    return index


def index_bytes(index, kind: str) -> np.ndarray:
    """faiss's own serialisation (uint8 array): what executors receive; no pickle."""
    import faiss

    return faiss.serialize_index_binary(index) if kind == "binary" else faiss.serialize_index(index)


def load_index(data: np.ndarray, kind: str, ef_search: int | None = None):
    import faiss

    index = faiss.deserialize_index_binary(data) if kind == "binary" else faiss.deserialize_index(data)
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search
    return index


def search(index, kind: str, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances float32 (n, k), ids int64 (n, k)) of each query's k nearest indexed rows,
    nearest first; Hamming bits (binary) or 1 - cosine (float). Missing neighbours (fewer than k
    rows, or HNSW running short) have id -1 and distance inf."""
    q = _prepared(queries, kind)
    if len(q) == 0 or index.ntotal == 0:
        return np.full((len(q), k), np.inf, np.float32), np.full((len(q), k), -1, np.int64)
    d, i = index.search(q, k)
    d = d.astype(np.float32) if kind == "binary" else (1.0 - d).astype(np.float32)
    d[i < 0] = np.inf
    return d, i.astype(np.int64)


def nearest_owners(distances: np.ndarray, ids: np.ndarray, owner: np.ndarray, k: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per query, its k nearest distinct owners (evaluation images) among the variant neighbours
    `ids` (rows of `owner`): flat arrays (query row, owner, variant row, distance), ordered by
    query, then distance (ties: the lower variant row). An owner appears once per query, with its
    nearest variant."""
    n, kv = ids.shape
    q = np.repeat(np.arange(n), kv)
    v = ids.ravel()
    d = distances.ravel()
    ok = v >= 0
    q, v, d = q[ok], v[ok], d[ok]
    o = np.asarray(owner)[v]
    order = np.lexsort((v, d, o, q))  # by query, owner, distance, variant
    q, v, d, o = q[order], v[order], d[order], o[order]
    first = np.ones(len(q), bool)
    first[1:] = (q[1:] != q[:-1]) | (o[1:] != o[:-1])
    q, v, d, o = q[first], v[first], d[first], o[first]
    order = np.lexsort((v, d, q))  # by query, distance, variant
    q, v, d, o = q[order], v[order], d[order], o[order]
    start = np.searchsorted(q, q, "left")  # first position of each row's query
    keep = np.arange(len(q)) - start < k
    return q[keep], o[keep], v[keep], d[keep]
