"""Candidate pairs of the dedup job's LSH banding against index size: linear, not quadratic.

    python -m bench.dedup_bench [--sizes 10000,100000,1000000] [--queries 1000] [--threshold 6] \
        [--bands 7,3] [--seed 0]

A fixed set of Q evaluation hashes (uniform random 63-bit pHash values) is searched in indexes of
N pretraining hashes: random ones plus, for 10% of the queries, a planted copy with 0..T+2 bits
flipped. For each banding (bands; probe radius = T // bands) it prints the candidate pairs, their
ratio to the previous size (10x the index: ~10x the candidates), the share of all N*Q pairs,
seconds (pipeline.lsh.near_pairs, numpy, one core) and the recall of planted pairs within T
(1.0 by the pigeonhole guarantee). Returns the rows as a dict.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from jobs.lib.config import parse_config
from pipeline.lsh import Banding
from pipeline.phash import BITS


@dataclass(frozen=True)
class DedupBenchConfig:
    sizes: tuple[str, ...] = field(default=("10000", "100000", "1000000"), metadata={"help": "index sizes N"})
    queries: int = field(default=1000, metadata={"help": "evaluation hashes Q (fixed across N)"})
    threshold: int = field(default=6, metadata={"help": "Hamming threshold T"})
    bands: tuple[str, ...] = field(default=("7", "3"), metadata={"help": "band counts to compare"})
    seed: int = field(default=0, metadata={"help": "seed of the hashes and plants"})

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
    return {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()}, "rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
