"""95% bootstrap intervals for per-group figures and the differences between groups.

Groups are disjoint sets of images, so each replicate resamples every group on its own (a
stratified bootstrap): images with replacement, or households (clusters) with replacement where
the protocol averages per household (SEER's Dollar Street figures). A replicate is a weight per
image, rows summing to 1 within a group: drawing cluster c m times out of M gives each of its
n_c images weight m / (M n_c), so the weighted sum is the mean over drawn households of their
means. Every figure and every difference is computed on the same replicates, and its interval is
the percentile interval (transfer/bootstrap.py's draws and percentile rule, here per group).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transfer.bootstrap import _check_boot, _weights


@dataclass(frozen=True)
class Replicates:
    """Per group g: rows[g] (image indices) and weights[g] [n_boot, len(rows[g])] (None if empty)."""
    rows: tuple
    weights: tuple
    n_boot: int


def replicate_weights(groups, num_groups: int, clusters=None, n_boot: int = 1000, seed: int = 0) -> Replicates:
    """Stratified bootstrap weights, groups drawn in index order from one seeded generator."""
    _check_boot(n_boot, 0.95)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    rows, weights = [], []
    for g in range(num_groups):
        r = np.flatnonzero(groups == g)
        rows.append(r)
        if len(r) == 0:
            weights.append(None)
        elif clusters is None:
            weights.append(_weights(rng, len(r), n_boot))
        else:
            _, inv = np.unique(np.asarray(clusters)[r], return_inverse=True)
            inv = inv.reshape(-1)
            size = np.bincount(inv)
            weights.append(_weights(rng, len(size), n_boot)[:, inv] / size[inv])
    return Replicates(tuple(rows), tuple(weights), n_boot)


def group_means(values, reps: Replicates) -> np.ndarray:
    """[n_boot, G, ...] replicate group means of `values` [N, ...] (nan for an empty group)."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full((reps.n_boot, len(reps.rows)) + v.shape[1:], np.nan)
    for g, (r, w) in enumerate(zip(reps.rows, reps.weights)):
        if w is not None:
            out[:, g] = np.tensordot(w, v[r], axes=1)
    return out


def class_accuracy(correct, labels, num_classes: int, reps: Replicates) -> np.ndarray:
    """[n_boot, G, C] replicate accuracy per group and class (nan where a replicate drew no image
    of the class in the group)."""
    correct, labels = np.asarray(correct, dtype=np.float64), np.asarray(labels)
    out = np.full((reps.n_boot, len(reps.rows), num_classes), np.nan)
    for g, (r, w) in enumerate(zip(reps.rows, reps.weights)):
        if w is None:
            continue
        onehot = np.eye(num_classes)[labels[r]]
        n, hit = w @ onehot, w @ (onehot * correct[r, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, g] = np.where(n > 0, hit / np.where(n > 0, n, 1), np.nan)
    return out


def interval(reps, level: float = 0.95) -> np.ndarray:
    """[2, ...]: the percentile interval over axis 0 (replicates), ignoring nan replicates; nan
    where every replicate is nan."""
    r = np.asarray(reps, dtype=np.float64)
    out = np.full((2,) + r.shape[1:], np.nan)
    ok = ~np.isnan(r).all(0)
    if ok.any():
        out[:, ok] = np.nanquantile(r[:, ok], [(1 - level) / 2, (1 + level) / 2], axis=0)
    return out


def figure(point: float, reps_1d) -> dict:
    """{"value", "ci95": [lo, hi]} for one figure and its replicates [n_boot]."""
    lo, hi = interval(np.asarray(reps_1d)[:, None])[:, 0]
    return {"value": plain(point), "ci95": [plain(lo), plain(hi)]}


def figures(point, reps) -> list:
    """Nested lists (the shape of `point`) of {"value", "ci95"} from replicates [n_boot, *shape]."""
    lo, hi = interval(reps)
    return _nest(np.asarray(point, dtype=np.float64), lo, hi)


def _nest(p, lo, hi):
    if p.ndim == 0:
        return {"value": plain(p), "ci95": [plain(lo), plain(hi)]}
    return [_nest(p[i], lo[i], hi[i]) for i in range(len(p))]


def plain(x):
    """A float, or nested lists of floats, with None for nan (JSON has no nan)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        return None if np.isnan(a) else float(a)
    return [plain(v) for v in a]
