"""95% bootstrap intervals for per-group figures and the differences between groups.

Groups are disjoint sets of images, so each replicate resamples every group on its own (a
stratified bootstrap): images with replacement, or households (clusters) with replacement where
the protocol averages per household (SEER's Dollar Street figures). A replicate is a weight per
image, rows summing to 1 within a group: drawing cluster c m times out of M gives each of its
n_c images weight m / (M n_c), so the weighted sum is the mean over drawn households of their
means. Every figure and every difference is computed on the same replicates, and its interval is
the percentile interval (transfer/bootstrap.py's draws and percentile rule, here per group).

A group whose rate is 0 (or 1) on every one of its n units gives a percentile interval of one
point, which claims a certainty the data lack (0 of 16 images is consistent with a true rate of
20%). There the interval's far end is the exact (Clopper-Pearson) bound, in closed form
1 - ((1 - level) / 2) ** (1 / n), and every difference the group enters is widened by as much
(`rates_and_differences`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transfer.bootstrap import _check_boot, _weights


@dataclass(frozen=True)
class Replicates:
    """Per group g: rows[g] (image indices), weights[g] [n_boot, len(rows[g])] (None if empty) and
    units[g], the number of units resampled (images, or households)."""
    rows: tuple
    weights: tuple
    n_boot: int
    units: tuple = ()


def replicate_weights(groups, num_groups: int, clusters=None, n_boot: int = 1000, seed: int = 0) -> Replicates:
    """Stratified bootstrap weights, groups drawn in index order from one seeded generator."""
    _check_boot(n_boot, 0.95)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    rows, weights, units = [], [], []
    for g in range(num_groups):
        r = np.flatnonzero(groups == g)
        rows.append(r)
        if len(r) == 0:
            weights.append(None)
            units.append(0)
        elif clusters is None:
            weights.append(_weights(rng, len(r), n_boot))
            units.append(len(r))
        else:
            _, inv = np.unique(np.asarray(clusters)[r], return_inverse=True)
            inv = inv.reshape(-1)
            size = np.bincount(inv)
            weights.append(_weights(rng, len(size), n_boot)[:, inv] / size[inv])
            units.append(len(size))
    return Replicates(tuple(rows), tuple(weights), n_boot, tuple(units))


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


def exact_end(n, level: float = 0.95) -> np.ndarray:
    """The Clopper-Pearson upper bound of a rate observed as 0 of n (1 minus it: the lower bound
    of n of n): 1 - ((1 - level) / 2) ** (1 / n); nan where n is 0."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(n > 0, 1 - ((1 - level) / 2) ** (1 / np.where(n > 0, n, 1)), np.nan)


def rates_and_differences(point, boot, reps: Replicates, level: float = 0.95) -> tuple:
    """(rate, diff): per group, a rate's figures and those of its difference from the other groups'
    mean (nested lists of {"value", "ci95"}, the shape of `point`). point [G, ...] and boot
    [n_boot, G, ...] are rates in [0, 1] over the units `reps` resamples. Where a group's rate is
    exactly 0 (1), the interval's upper (lower) end is at least the exact bound over its units, and
    each difference is widened by what its own group's and (averaged) the other groups' intervals
    gained."""
    from transfer.groups.metrics import others_mean

    point = np.asarray(point, dtype=np.float64)
    shape = point.shape
    p = point.reshape(shape[0], -1)
    b = np.asarray(boot, dtype=np.float64).reshape(-1, *p.shape)
    lo, hi = interval(b)
    end = exact_end(np.asarray(reps.units, dtype=np.float64), level)[:, None]
    new_hi = np.where(p == 0, np.fmax(hi, end), hi)
    new_lo = np.where(p == 1, np.fmin(lo, 1 - end), lo)
    gain_hi, gain_lo = np.nan_to_num(new_hi - hi), np.nan_to_num(lo - new_lo)
    d_lo, d_hi = interval(b - others_mean(b))
    d_lo = d_lo - gain_lo - np.nan_to_num(others_mean(gain_hi))
    d_hi = d_hi + gain_hi + np.nan_to_num(others_mean(gain_lo))
    diff = p - others_mean(p)
    return (_nest(point, new_lo.reshape(shape), new_hi.reshape(shape)),
            _nest(diff.reshape(shape), d_lo.reshape(shape), d_hi.reshape(shape)))


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
