"""Sampling arithmetic for the resampled sample index (SWAG section 3.1, WSL section 3.1).

Everything here is a pure function of plain values; jobs/lib/resampling.py applies it per bucket.

MetaCLIP balancing (Xu et al. 2023; MetaCLIP 2) is no weighted draw: each image is kept or not,
with the probabilities of `metaclip_keep_probability` (one uniform per image and epoch).

Exact two-level multinomial: M i.i.d. draws with p_i proportional to w_i are distributed as
Multinomial(M, w / sum w). Splitting the images into buckets b, that equals
  n_b ~ Multinomial(M, W_b / W)   then   n_i ~ Multinomial(n_b, w_i / W_b) within each bucket,
so only the per-bucket sums W_b ever meet on the driver. Weights are fixed-point integers, so the
sums are exact whatever the order in which Spark adds them.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

DRAW_CHUNK = 1 << 20  # uniform draws held at once by `multinomial`
WEIGHT_SCALE = 2 ** 32  # fixed-point weights: relative error <= 2^-32 / w, w >= 1e-4 in practice
WEIGHTED = ("importance", "sqrt", "uniform", "natural")  # draws of M samples with replacement
METACLIP = "metaclip"  # a kept subset, each image at most once
STRATEGIES = (*WEIGHTED, METACLIP)
HEAD, TAIL, ALL = "head", "tail", "all"


def importance(label_images: list[int]) -> float:
    """SWAG importance factor of an image: max over its labels of f(h)^-1/2."""
    return max(f ** -0.5 for f in label_images)


def split_sizes(samples: int, alpha: float) -> dict[str, int]:
    """Head gets round(alpha * M) samples, tail the rest."""
    if samples <= 0:
        raise ValueError(f"--samples must be > 0, got {samples}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {alpha}")
    head = int(round(alpha * samples))
    return {HEAD: head, TAIL: samples - head}


def strategy_weight(strategy: str, importance_: float, label_images: list[int]) -> float:
    """Per-image sampling weight (unnormalized) of a strategy.

    importance: SWAG, p_i proportional to the importance factor (within its head/tail split).
    natural / sqrt / uniform: WSL's hashtag-then-image sampling, a hashtag h drawn with probability
    proportional to g(f_h) = f_h, sqrt(f_h) or 1, then one of its f_h images uniformly, so
    p_i is proportional to sum over the image's labels of g(f_h) / f_h.
    """
    if strategy == "importance":
        return importance_
    g = {"natural": lambda f: 1.0, "sqrt": lambda f: f ** -0.5, "uniform": lambda f: 1.0 / f}
    if strategy not in g:
        raise ValueError(f"no sampling weight for strategy {strategy!r}; valid: {', '.join(WEIGHTED)}")
    return sum(g[strategy](f) for f in label_images)


def entry_keep_probability(label_images: int, cap: float) -> float:
    """MetaCLIP's p_h = min(1, T / f(h)): an entry (label) of f images keeps about T of them."""
    if label_images < 1 or not cap > 0:
        raise ValueError(f"need f(h) >= 1 and a cap > 0, got f(h) = {label_images}, cap {cap}")
    return min(1.0, cap / label_images)


def metaclip_keep_probability(label_images: list[int], cap: float) -> float:
    """p_i = 1 - prod over the image's labels of (1 - p_h) (MetaCLIP 2). MetaCLIP 1 keeps an image
    when any of its entries is kept: with independent draws per entry, the same probability."""
    miss = 1.0
    for f in label_images:
        miss *= 1.0 - entry_keep_probability(f, cap)
    return 1.0 - miss


def metaclip_keep_probabilities(offsets: np.ndarray, labels: np.ndarray, label_images: np.ndarray,
                                cap: float) -> np.ndarray:
    """`metaclip_keep_probability` of every row of a list column at once: row r's labels are
    labels[offsets[r]:offsets[r + 1]] (a sliced Arrow list column's offsets need not start at 0),
    label_images[h] is f(h). In logs, -expm1(sum log1p(-p_h)), exact where the p_h are tiny; a row
    with no label gets 0."""
    offsets = np.asarray(offsets, dtype=np.int64)
    f = np.asarray(label_images, dtype=np.float64)[np.asarray(labels, dtype=np.int64)[offsets[0]:offsets[-1]]]
    if np.any(f < 1) or not cap > 0:
        raise ValueError(f"need f(h) >= 1 for every label carried and a cap > 0 (cap {cap})")
    row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    with np.errstate(divide="ignore"):  # p_h = 1: log 0 = -inf, and the image is kept surely
        log_miss = np.bincount(row, weights=np.log1p(-np.minimum(1.0, cap / f)), minlength=len(offsets) - 1)
    return -np.expm1(log_miss)


def fixed_point(weights: np.ndarray) -> np.ndarray:
    """Float weights -> int64 fixed-point (at least 1 for a positive weight)."""
    w = np.asarray(weights, dtype=np.float64)
    if np.any(~np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("sampling weights must be finite and > 0")
    return np.maximum(1, np.rint(w * WEIGHT_SCALE)).astype(np.int64)


def rng_for(seed: int, *key) -> np.random.Generator:
    """A generator determined by (seed, key...) only: the same on any executor or retry."""
    digest = hashlib.sha256(repr((seed,) + key).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def multinomial(n: int, int_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts of n i.i.d. draws over categories with probabilities int_weights / sum (exact).

    Draws n integers uniformly in [0, W) and locates them in the integer cumulative weights:
    no float normalization, so no drift with millions of categories; O(n log k) time. The draws
    are made DRAW_CHUNK at a time (the generator's stream is the same as one call's), so the
    driver's level-one draw of M samples over a few buckets holds a chunk, not M integers.
    """
    w = np.asarray(int_weights, dtype=np.int64)
    if len(w) == 0:
        if n:
            raise ValueError(f"{n} draws from an empty set")
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(w)
    total = int(cum[-1])
    if total <= 0:
        raise ValueError("multinomial over zero total weight")
    counts = np.zeros(len(w), dtype=np.int64)
    for start in range(0, n, DRAW_CHUNK):  # memory O(chunk + categories), whatever n; same stream
        u = rng.integers(0, total, size=min(DRAW_CHUNK, n - start), dtype=np.int64)
        counts += np.bincount(np.searchsorted(cum, u, side="right"), minlength=len(w))
    return counts


def bucket_draws(samples: int, bucket_weights: dict[int, int], rng: np.random.Generator) -> dict[int, int]:
    """Level one: samples per bucket from exact integer bucket sums (Python ints of any size)."""
    if samples and not bucket_weights:
        raise ValueError(f"{samples} samples to draw from an empty split")
    keys = sorted(bucket_weights)
    total = sum(bucket_weights[k] for k in keys)
    shift = max(0, total.bit_length() - 62)  # keep the cumulative sum inside int64
    w = np.array([max(1, bucket_weights[k] >> shift) for k in keys], dtype=np.int64)
    return dict(zip(keys, (int(c) for c in multinomial(samples, w, rng))))


def bucket_count(n_rows: int, rows_per_bucket: int = 200_000) -> int:
    """Buckets are logical (hash of image_id), so the draw never depends on Spark's partitions."""
    return max(16, math.ceil(n_rows / rows_per_bucket))


_FEISTEL_ROUNDS = 6
_U64 = np.uint64


def _mix64(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """splitmix64's finalizer of x ^ key, elementwise on uint64 (wrapping arithmetic)."""
    z = (x ^ key) + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def shuffled_position(index: np.ndarray, total: int, seed: int) -> np.ndarray:
    """A seeded pseudorandom permutation of [0, total), applied to `index` (values in [0, total)).

    A balanced Feistel network of 6 rounds (splitmix64 round functions keyed by (seed, round))
    permutes [0, 4^h), the smallest such range holding `total`; values that land at or beyond
    `total` are permuted again until they fall inside (cycle walking, fewer than 4 rounds on
    average), which keeps it a bijection of [0, total). Each value is mapped on its own, so a
    bucket of samples numbers itself without seeing any other bucket: the shuffle of a sample
    index needs no sort.
    """
    if total < 1:
        raise ValueError(f"a permutation of {total} items")
    x = np.asarray(index, dtype=np.int64)
    if len(x) and (x.min() < 0 or x.max() >= total):
        raise ValueError(f"indices must lie in [0, {total})")
    half = max(1, ((total - 1).bit_length() + 1) // 2)
    mask = _U64((1 << half) - 1)
    keys = [_U64(k) for k in rng_for(seed, "positions").integers(0, 2 ** 63, size=_FEISTEL_ROUNDS)]

    def permute(v: np.ndarray) -> np.ndarray:
        left, right = v >> _U64(half), v & mask
        for k in keys:
            left, right = right, left ^ (_mix64(right, k) & mask)
        return (left << _U64(half)) | right

    out = permute(x.astype(np.uint64))
    todo = np.flatnonzero(out >= _U64(total))
    while len(todo):
        out[todo] = permute(out[todo])
        todo = todo[out[todo] >= _U64(total)]
    return out.astype(np.int64)
