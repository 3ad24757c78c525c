"""Candidate pairs of the dedup job's LSH banding against index size: linear, not quadratic.

    python -m bench.dedup_bench [--sizes 10000,100000,1000000] [--queries 1000] [--threshold 6] \
        [--bands 7,3] [--seed 0]

A fixed set of Q evaluation hashes (uniform random 63-bit pHash values) is searched in indexes of
N pretraining hashes: random ones plus, for 10% of the queries, a planted copy with 0..T+2 bits
flipped. For each banding (bands; probe radius = T // bands) it prints the candidate pairs, their
ratio to the previous size (10x the index: ~10x the candidates), the share of all N*Q pairs,
seconds (pipeline.lsh.near_pairs, numpy, one core) and the recall of planted pairs within T
(1.0 by the pigeonhole guarantee).

The embedding method's index (pipeline/simhash.py) gets the same treatment: Q unit queries in
--embed-dim dimensions (isotropic Gaussian, as mean-centred embeddings of unrelated images are
roughly), N random index vectors plus, for 10% of the queries, a planted vector at cosine 0.97,
0.93 or 0.9 (recall at the default cosine-distance threshold 0.1), searched with --tables SimHash
tables of --table-bits bits. Returns the rows as a dict.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from jobs.lib.config import parse_config
from pipeline.lsh import Banding
from pipeline.phash import BITS
from pipeline.simhash import SimHashTables, candidate_pairs


@dataclass(frozen=True)
class DedupBenchConfig:
    sizes: tuple[str, ...] = field(default=("10000", "100000", "1000000"), metadata={"help": "index sizes N"})
    queries: int = field(default=1000, metadata={"help": "evaluation hashes Q (fixed across N)"})
    threshold: int = field(default=6, metadata={"help": "Hamming threshold T"})
    bands: tuple[str, ...] = field(default=("7", "3"), metadata={"help": "band counts to compare"})
    seed: int = field(default=0, metadata={"help": "seed of the hashes and plants"})
    embed_dim: int = field(default=64, metadata={"help": "embedding method: dimensions (0: skip it)"})
    tables: int = field(default=SimHashTables.tables, metadata={"help": "embedding method: LSH tables"})
    table_bits: int = field(default=SimHashTables.bits, metadata={"help": "embedding method: bits per key"})

    def __post_init__(self):
        if not self.sizes or not all(s.isdigit() and int(s) > 0 for s in self.sizes):
            raise ValueError(f"--sizes must be positive integers, got {self.sizes}")
        if not self.bands or not all(b.isdigit() and int(b) > 0 for b in self.bands):
            raise ValueError(f"--bands must be positive integers, got {self.bands}")
        if self.queries < 10:
            raise ValueError("--queries must be >= 10")


def make_hashes(n: int, q: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """(index, queries, planted (index row, query row, distance))."""
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, 1 << BITS, q, dtype=np.int64)
    index = rng.integers(0, 1 << BITS, n, dtype=np.int64)
    planted = []
    rows = rng.choice(n, size=q // 10, replace=False)
    for k, i in enumerate(rows):
        d = k % (t + 3)
        flips = rng.choice(BITS, d, replace=False)
        index[i] = queries[k] ^ np.int64(sum(1 << int(b) for b in flips))
        planted.append((int(i), k, d))
    return index, queries, planted


def main(argv: list[str] | None = None) -> dict:
    from pipeline.lsh import near_pairs

    cfg = parse_config(DedupBenchConfig, argv, __doc__.splitlines()[0])
    rows = []
    print(f"{'N':>9} {'bands':>5} {'radius':>6} {'candidates':>12} {'x prev':>7} {'cand/N':>7} "
          f"{'share':>9} {'seconds':>8} {'recall':>6}")
    for b in map(int, cfg.bands):
        banding = Banding(cfg.threshold, b)
        prev = None
        for n in map(int, cfg.sizes):
            index, queries, planted = make_hashes(n, cfg.queries, cfg.threshold, cfg.seed)
            t0 = time.perf_counter()
            pairs, _, n_cand = near_pairs(index, queries, banding)
            secs = time.perf_counter() - t0
            found = {(int(i), int(q)) for i, q in pairs}
            want = [(i, q) for i, q, d in planted if d <= cfg.threshold]
            recall = sum(p in found for p in want) / len(want)
            row = {"n": n, "queries": cfg.queries, "bands": b, "radius": banding.radius, "candidates": n_cand,
                   "ratio_to_previous": None if prev is None else n_cand / prev, "candidates_per_index_hash":
                   n_cand / n, "share_of_all_pairs": n_cand / (n * cfg.queries), "seconds": secs,
                   "planted_recall": recall, "matches": len(pairs)}
            rows.append(row)
            ratio = "" if prev is None else f"{n_cand / prev:.2f}"
            print(f"{n:>9} {b:>5} {banding.radius:>6} {n_cand:>12} {ratio:>7} {n_cand / n:>7.3f} "
                  f"{n_cand / (n * cfg.queries):>9.2e} {secs:>8.2f} {recall:>6.3f}", flush=True)
            prev = n_cand
    embedding = embedding_rows(cfg) if cfg.embed_dim else []
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()}, "rows": rows,
            "embedding_rows": embedding}


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embedding_rows(cfg: DedupBenchConfig) -> list[dict]:
    tables = SimHashTables(cfg.tables, cfg.table_bits, cfg.seed)
    planes = tables.planes(cfg.embed_dim)
    rng = np.random.default_rng(cfg.seed)
    queries = unit_rows(rng, cfg.queries, cfg.embed_dim)
    q_keys = tables.keys(queries, planes)
    print(f"\nembedding index: {tables.tables} tables x {tables.bits} bits, dim {cfg.embed_dim}, "
          f"P(candidate) at cosine 0.9: {tables.collision_probability(0.9):.4f}, at 0: {tables.collision_probability(0.0):.2e}")
    print(f"{'N':>9} {'candidates':>12} {'x prev':>7} {'cand/N':>7} {'share':>9} {'seconds':>8} {'recall':>6}")
    rows, prev = [], None
    for n in map(int, cfg.sizes):
        r = np.random.default_rng([cfg.seed, n])
        chunks = [tables.keys(unit_rows(r, min(100_000, n - s), cfg.embed_dim), planes) for s in range(0, n, 100_000)]
        index_keys = np.concatenate(chunks)
        planted_rows = r.choice(n, size=cfg.queries // 10, replace=False)
        for k, i in enumerate(planted_rows):  # a vector at cosine c to query k replaces index row i
            c = (0.97, 0.93, 0.9)[k % 3]
            o = r.standard_normal(cfg.embed_dim)
            o -= (o @ queries[k]) * queries[k]
            v = c * queries[k] + np.sqrt(1 - c * c) * o / np.linalg.norm(o)
            index_keys[i] = tables.keys(v[None], planes)[0]
        t0 = time.perf_counter()
        pairs = candidate_pairs(index_keys, q_keys)
        secs = time.perf_counter() - t0
        found = {(int(i), int(q)) for i, q in pairs}
        recall = sum((int(i), k) in found for k, i in enumerate(planted_rows)) / len(planted_rows)
        m = len(pairs)
        rows.append({"n": n, "queries": cfg.queries, "candidates": m, "ratio_to_previous": None if prev is None else m / prev,
                     "candidates_per_index_vector": m / n, "share_of_all_pairs": m / (n * cfg.queries),
                     "seconds": secs, "planted_recall": recall})
        ratio = "" if prev is None else f"{m / prev:.2f}"
        print(f"{n:>9} {m:>12} {ratio:>7} {m / n:>7.3f} {m / (n * cfg.queries):>9.2e} {secs:>8.2f} {recall:>6.3f}", flush=True)
        prev = m
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
