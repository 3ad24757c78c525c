"""Candidate pairs of near-duplicate embeddings without comparing all pairs (pure, numpy).

Random-hyperplane LSH (Charikar 2002): a bit is the sign of the embedding's projection on a random
Gaussian direction; two unit vectors at angle theta disagree on it with probability theta / pi.
`tables` independent keys of `bits` such bits each: a pair becomes a candidate when any key is
equal, with probability 1 - (1 - (1 - theta/pi)^bits)^tables. Near-duplicates (cosine ~0.9 or
more) collide with probability near 1, unrelated images (cosine ~0 after mean-centring) with
about tables / 2^bits, so the candidates of a fixed query set grow linearly with the indexed set.
Candidates are then confirmed by their exact cosine distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimHashTables:
    tables: int = 64      # independent hash tables; a pair sharing any one key is a candidate
    bits: int = 16        # sign bits per key: at cosine 0.9 a pair is a candidate with p = 0.996,
                          # at cosine 0 with p = 0.001
    seed: int = 0         # the random directions: the same seed on every executor

    def __post_init__(self):
        if not 1 <= self.tables <= 256:
            raise ValueError(f"tables must be in [1, 256], got {self.tables}")
        if not 1 <= self.bits <= 62:
            raise ValueError(f"bits must be in [1, 62], got {self.bits}")

    def planes(self, dim: int) -> np.ndarray:
        """float32 [dim, tables * bits] Gaussian directions, a function of (seed, dim) only."""
        return np.random.default_rng([self.seed, dim]).standard_normal((dim, self.tables * self.bits)).astype(np.float32)

    def keys(self, x: np.ndarray, planes: np.ndarray | None = None) -> np.ndarray:
        """int64 [N, tables]: each table's `bits` sign bits of x [N, dim] as an integer."""
        x = np.asarray(x, dtype=np.float32)
        planes = self.planes(x.shape[1]) if planes is None else planes
        signs = (x @ planes > 0).reshape(len(x), self.tables, self.bits).astype(np.int64)
        return signs @ (np.int64(1) << np.arange(self.bits, dtype=np.int64))

    def collision_probability(self, cosine: float) -> float:
        """Probability that two vectors at this cosine share at least one key."""
        p_bit = 1.0 - math.acos(max(-1.0, min(1.0, cosine))) / math.pi
        return 1.0 - (1.0 - p_bit ** self.bits) ** self.tables


def centred_unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Rows of x minus `mean`, scaled to unit length (a zero row stays zero)."""
    y = np.asarray(x, dtype=np.float32) - np.asarray(mean, dtype=np.float32)
    n = np.linalg.norm(y, axis=1, keepdims=True)
    return y / np.where(n > 0, n, 1.0)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cosine of matching rows of two arrays of unit vectors."""
    return 1.0 - np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64), axis=-1)


def candidate_pairs(index_keys: np.ndarray, query_keys: np.ndarray) -> np.ndarray:
    """int64 [M, 2] distinct (index row, query row) pairs sharing a key in some table, from
    int64 keys [N, tables] and [Q, tables]: one sort per table, no all-pairs comparison."""
    found = []
    for t in range(index_keys.shape[1]):
        order = np.argsort(index_keys[:, t], kind="stable")
        sorted_keys = index_keys[order, t]
        lo = np.searchsorted(sorted_keys, query_keys[:, t], "left")
        hi = np.searchsorted(sorted_keys, query_keys[:, t], "right")
        counts = hi - lo
        q = np.repeat(np.arange(len(query_keys)), counts)
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        found.append(np.stack([order[starts + np.arange(counts.sum())], q], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0)
