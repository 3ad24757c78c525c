"""Confidence intervals of accuracies on a downstream task: per-arm accuracy and pairwise
differences over pretraining seeds and val images, and how much bigger the task would need to be
(`make compare`'s report, experiments/compare.py; the zero-shot table, transfer/zero_shot_table.py).

Each arm gives `correct`, shape [R, V]: run r's result on val image v (1/0 for the linear probe,
the mean over few-shot draws for few-shot). Two sources of noise: which pretraining seeds we ran
(R) and which val images the task happens to hold (V). A hierarchical bootstrap resamples both
(Saravanan et al. 2020, "Application of the hierarchical bootstrap to multi-level data in
neuroscience"; Bouthillier et al. 2021, "Accounting for Variance in Machine Learning Benchmarks"):
every replicate draws V images with replacement, shared by all runs, and R runs with replacement;
the statistic is the mean over the drawn cells. The CI is the percentile interval (Efron &
Tibshirani 1993, ch. 13). Arms share the val images, so a difference resamples images once for
both arms (paired) and runs independently per arm. Resampling images only, or runs only, gives
the two parts of the standard error that `images_needed` / `seeds_needed` extrapolate.
"""
from __future__ import annotations

import math

import numpy as np

Z95, Z_POWER80 = 1.96, 0.8416


def _check_correct(correct, name: str = "correct") -> np.ndarray:
    x = np.asarray(correct, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise ValueError(f"{name} must be 2-D [runs >= 1, val_images >= 2], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} (shape {x.shape}) has {int((~np.isfinite(x)).sum())} non-finite values")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name} values must be in [0, 1], got range [{x.min()}, {x.max()}]")
    return x


def _check_boot(n_boot: int, level: float) -> None:
    if int(n_boot) != n_boot or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _weights(rng, n: int, n_boot: int) -> np.ndarray:
    """[n_boot, n] bootstrap weights: counts of each index among n draws with replacement, / n."""
    rows = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(rows.ravel(), minlength=n_boot * n).reshape(n_boot, n) / n


def _means(x: np.ndarray, run_w: np.ndarray, img_w: np.ndarray) -> np.ndarray:
    """Per replicate b: sum_r sum_v run_w[b, r] * x[r, v] * img_w[b, v] (the mean over drawn cells)."""
    return np.einsum("br,rb->b", run_w, x @ img_w.T)


def _percentile_ci(stats: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def arm_summary(correct, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """One arm's grand mean, hierarchical-bootstrap percentile CI, per-run means and the standard
    error split into images-only (runs fixed) and runs-only (images fixed) resampling."""
    x = _check_correct(correct)
    _check_boot(n_boot, level)
    R, V = x.shape
    rng = np.random.default_rng(seed)
    uniform_runs, uniform_imgs = np.full((n_boot, R), 1.0 / R), np.full((n_boot, V), 1.0 / V)
    both = _means(x, _weights(rng, R, n_boot), _weights(rng, V, n_boot))
    images_only = _means(x, uniform_runs, _weights(rng, V, n_boot))
    runs_only = _means(x, _weights(rng, R, n_boot), uniform_imgs)
    return {"mean": float(x.mean()), "ci95": _percentile_ci(both, level),
            "runs": [float(m) for m in x.mean(axis=1)],
            "se_images": float(images_only.std(ddof=1)),
            "se_runs": float(runs_only.std(ddof=1)) if R > 1 else 0.0}


def paired_difference(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) - mean(b) for two arms evaluated on the same val images in the same order: one image
    resample per replicate for both arms, runs resampled within each arm. Keys: diff, ci95,
    significant (CI excludes 0), p_value (two-sided bootstrap p), se_images, se_runs,
    images_needed, seeds_needed (per arm; see those functions), runs ([Ra, Rb])."""
    a, b = _check_correct(a, "a"), _check_correct(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must share the val images: a has shape {a.shape}, b has shape {b.shape}")
    _check_boot(n_boot, level)
    (Ra, V), Rb = a.shape, b.shape[0]
    rng = np.random.default_rng(seed)
    img_w = _weights(rng, V, n_boot)
    both = _means(a, _weights(rng, Ra, n_boot), img_w) - _means(b, _weights(rng, Rb, n_boot), img_w)
    img_w = _weights(rng, V, n_boot)
    images_only = _means(a, np.full((n_boot, Ra), 1 / Ra), img_w) - _means(b, np.full((n_boot, Rb), 1 / Rb), img_w)
    uniform_imgs = np.full((n_boot, V), 1.0 / V)
    runs_a = _means(a, _weights(rng, Ra, n_boot), uniform_imgs) if Ra > 1 else np.zeros(n_boot)
    runs_b = _means(b, _weights(rng, Rb, n_boot), uniform_imgs) if Rb > 1 else np.zeros(n_boot)
    var_a, var_b = float(runs_a.var(ddof=1)), float(runs_b.var(ddof=1))
    diff = float(a.mean() - b.mean())
    ci = _percentile_ci(both, level)
    se_images, se_runs = float(images_only.std(ddof=1)), math.sqrt(var_a + var_b)
    # Seeds per arm at which the run part shrinks as 1/R: se_runs^2 = (var_a*Ra + var_b*Rb) / R.
    runs_eff = (var_a * Ra + var_b * Rb) / (var_a + var_b) if var_a + var_b > 0 else min(Ra, Rb)
    p = min(1.0, 2 * min(float(np.mean(both <= 0)), float(np.mean(both >= 0))))
    return {"diff": diff, "ci95": ci, "significant": bool(ci[0] > 0 or ci[1] < 0), "p_value": p,
            "se_images": se_images, "se_runs": se_runs,
            "images_needed": images_needed(diff, se_images, se_runs, V),
            "seeds_needed": seeds_needed(diff, se_images, se_runs, runs_eff), "runs": [Ra, Rb]}


def _target_variance(diff: float, z: float, power_z: float) -> float:
    """Variance of the estimate at which a true difference `diff` is detected (|diff| > z*se) with
    the power that `power_z` encodes (0.8416: 80%): se = |diff| / (z + power_z)."""
    return (abs(diff) / (z + power_z)) ** 2


def _ceil(x: float) -> int:
    return math.ceil(round(x, 9))  # 1600.0000000002 is 1600


def images_needed(diff: float, se_images: float, se_runs: float, val_images: int,
                  z: float = Z95, power_z: float = Z_POWER80) -> int | None:
    """Val images (at least 2) at which a true difference `diff` is detected with 80% power.

    Assumes the images part of the SE scales as 1/sqrt(V) (independent images) and the runs part
    does not depend on V: solves (|diff|/(z+power_z))^2 = se_images^2 * V/V' + se_runs^2 for V'.
    None when diff == 0 or se_runs alone is at least the target SE (no number of images does it)."""
    target = _target_variance(diff, z, power_z)
    if diff == 0 or target <= se_runs ** 2:
        return None
    return max(2, _ceil(se_images ** 2 * val_images / (target - se_runs ** 2)))


def seeds_needed(diff: float, se_images: float, se_runs: float, runs: float,
                 z: float = Z95, power_z: float = Z_POWER80) -> int | None:
    """Pretraining seeds (at least 1) at which a true difference `diff` is detected with 80% power,
    val images fixed.

    Assumes the runs part of the SE scales as 1/sqrt(R) (independent seeds) and the images part
    does not depend on R: solves (|diff|/(z+power_z))^2 = se_images^2 + se_runs^2 * R/R' for R'.
    With one run se_runs is 0 (seed variance unmeasured), so the answer then ignores seed noise.
    None when diff == 0 or se_images alone is at least the target SE (no number of seeds does it)."""
    target = _target_variance(diff, z, power_z)
    if diff == 0 or target <= se_images ** 2:
        return None
    return max(1, _ceil(se_runs ** 2 * runs / (target - se_images ** 2)))
