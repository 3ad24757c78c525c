"""Sampling arithmetic for the resampled sample index (SWAG section 3.1, WSL section 3.1).

Everything here is a pure function of plain values; jobs/lib/resampling.py applies it per bucket.

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

WEIGHT_SCALE = 2 ** 32  # fixed-point weights: relative error <= 2^-32 / w, w >= 1e-4 in practice
STRATEGIES = ("importance", "sqrt", "uniform", "natural")
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
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    return sum(g[strategy](f) for f in label_images)


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
    no float normalization, so no drift with millions of categories; O(n log k) time.
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
    u = rng.integers(0, total, size=n, dtype=np.int64)
    return np.bincount(np.searchsorted(cum, u, side="right"), minlength=len(w)).astype(np.int64)


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
