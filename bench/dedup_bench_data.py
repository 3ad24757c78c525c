"""Synthetic data of bench/dedup_bench.py: clustered evaluation variants and planted queries.

An evaluation image's variants are its base descriptor perturbed (binary: 0-20% of the bits
flipped, as crop variants of one picture scatter around its hash; float: rotated by a small
angle), and half of the queries are near copies of an indexed variant at known distances.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dedup.ann import nearest_owners
from dedup.phash import BITS

CHUNK = 100_000  # rows generated at a time: bounded temporaries at 1M variants


@dataclass
class Case:
    """An evaluation index's variants and the queries against it."""
    kind: str
    x: np.ndarray        # int64 hashes (n,) or unit float32 vectors (n, dim)
    owner: np.ndarray    # per variant: its evaluation image
    queries: np.ndarray
    source: np.ndarray   # per query: the variant row it was planted from, -1 for random queries
    level: np.ndarray    # per query: its plant level j (-1 for random queries)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _owners(n: int, variants: int) -> np.ndarray:
    return (np.arange(n) // variants).astype(np.int32)


def clustered_hashes(rng: np.random.Generator, n: int, variants: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner): n 63-bit codes, `variants` per image, each its image's base hash with a
    share of bits flipped drawn uniformly in [0, 0.2] per variant."""
    owner = _owners(n, variants)
    base = rng.integers(0, 1 << BITS, owner[-1] + 1 if n else 0, dtype=np.int64)
    out = np.empty(n, np.int64)
    weights = np.uint64(1) << np.arange(BITS, dtype=np.uint64)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        flips = rng.random((m, BITS)) < rng.uniform(0, 0.2, (m, 1))
        out[s:s + m] = base[owner[s:s + m]] ^ (flips * weights).sum(1, dtype=np.uint64).view(np.int64)
    return out, owner


def clustered_vectors(rng: np.random.Generator, n: int, variants: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, owner): n unit vectors, `variants` per image, each its image's random unit centre
    rotated by an angle uniform in [0, 0.2 pi] towards a random orthogonal direction."""
    owner = _owners(n, variants)
    centres = _unit(rng.standard_normal((owner[-1] + 1 if n else 0, dim)))
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, CHUNK):
        c = centres[owner[s:s + CHUNK]]
        out[s:s + len(c)] = _unit(_rotated(rng, c, rng.uniform(0, 0.2 * np.pi, len(c))))
    return out, owner


def _rotated(rng: np.random.Generator, x: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Unit rows x turned by `angle` towards random directions orthogonal to them."""
    u = rng.standard_normal(x.shape).astype(np.float32)
    u = _unit(u - (u * x).sum(1, keepdims=True) * x)
    return np.cos(angle)[:, None] * x + np.sin(angle)[:, None] * u


def planted_queries(rng: np.random.Generator, kind: str, x: np.ndarray, q: int, threshold: int,
                    float_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(queries, source row, level): the first q // 2 are variant `source` moved by level
    j = k mod (threshold + 3) (j bits flipped; float: cosine distance float_threshold * j /
    (threshold + 0.5)), the rest random (source and level -1)."""
    m = q // 2
    source = np.full(q, -1, np.int64)
    level = np.full(q, -1, np.int64)
    source[:m] = rng.choice(len(x), m, replace=len(x) < m)
    level[:m] = np.arange(m) % (threshold + 3)
    if kind == "binary":
        out = rng.integers(0, 1 << BITS, q, dtype=np.int64)
        weights = np.uint64(1) << np.arange(BITS, dtype=np.uint64)
        for s in range(0, m, CHUNK):
            e = min(m, s + CHUNK)
            rank = np.argsort(np.argsort(rng.random((e - s, BITS)), axis=1), axis=1)  # a random bit order
            mask = ((rank < level[s:e, None]) * weights).sum(1, dtype=np.uint64).view(np.int64)
            out[s:e] = x[source[s:e]] ^ mask
        return out, source, level
    out = _unit(rng.standard_normal((q, x.shape[1])))
    cos = 1.0 - float_threshold * level[:m] / (threshold + 0.5)
    out[:m] = _unit(_rotated(rng, x[source[:m]], np.arccos(cos)))
    return out, source, level


def make_case(kind: str, n: int, cfg, q: int | None = None) -> Case:
    rng = np.random.default_rng([cfg.seed, n, int(kind == "float")])
    x, owner = (clustered_hashes(rng, n, cfg.variants) if kind == "binary"
                else clustered_vectors(rng, n, cfg.variants, cfg.dim))
    queries, source, level = planted_queries(rng, kind, x, q or cfg.queries, cfg.threshold, cfg.float_threshold)
    return Case(kind, x, owner, queries, source, level)


def image_pairs(d: np.ndarray, ids: np.ndarray, owner: np.ndarray, probe: int, limit: float) -> set[tuple[int, int]]:
    """(query row, evaluation image) pairs within `limit` among each query's `probe` nearest images."""
    q, o, _, dist = nearest_owners(d, ids, owner, probe)
    keep = dist <= limit
    return set(zip(q[keep].tolist(), o[keep].tolist()))


def planted_recall(pairs: set, case: Case, threshold: int) -> float:
    """Share of planted queries with level <= threshold whose source image is in `pairs`."""
    want = np.flatnonzero((case.level >= 0) & (case.level <= threshold))
    return sum((int(k), int(case.owner[case.source[k]])) in pairs for k in want) / max(len(want), 1)


def job_descriptors(case: Case, n: int, cfg) -> np.ndarray:
    """n synthetic pretraining hashes against `case`'s variants: half planted, half random."""
    return planted_queries(np.random.default_rng([cfg.seed, n, 2]), "binary", case.x, n, cfg.threshold,
                           cfg.float_threshold)[0]
