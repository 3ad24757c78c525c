"""Bootstrap CIs of make compare against hand values: normal approximations, hand-computed
standard errors, a coverage simulation and the power formula written out."""
import math
import os

import numpy as np
import pytest
from PIL import Image

from experiments.report import compare_table, pairwise_report, plot_compare
from transfer.bootstrap import arm_summary, images_needed, paired_difference, seeds_needed


def half_ones(v=400, seed=1):
    x = np.array([1.0] * (v // 2) + [0.0] * (v - v // 2))
    return np.random.default_rng(seed).permutation(x)


def test_single_run_matches_normal_approximation():
    x = half_ones()
    s = arm_summary(x[None, :])
    half = 1.96 * math.sqrt(0.25 / 400)  # 0.049
    assert s["mean"] == 0.5 and s["runs"] == [0.5]
    assert s["ci95"][0] == pytest.approx(0.5 - half, abs=0.005)
    assert s["ci95"][1] == pytest.approx(0.5 + half, abs=0.005)
    assert s["ci95"][0] < 0.5 < s["ci95"][1]
    assert s["se_images"] == pytest.approx(math.sqrt(0.25 / 400), rel=0.05)
    assert s["se_runs"] == 0.0


def test_constant_vector_has_zero_width_ci():
    s = arm_summary(np.full((3, 50), 0.7))
    assert s["ci95"] == pytest.approx([0.7, 0.7], abs=1e-12)
    assert s["se_images"] == pytest.approx(0, abs=1e-12) and s["se_runs"] == pytest.approx(0, abs=1e-12)


def offset_runs(base, offsets):
    """Runs equal to `base` except that run r has its first offsets[r] images forced to 1."""
    runs = np.repeat(base[None, :], len(offsets), axis=0)
    for r, k in enumerate(offsets):
        runs[r, :k] = 1.0
    return runs


def test_run_variance_widens_the_ci():
    base = np.zeros(200)
    base[::2] = 1.0  # run 0 at 0.5; runs 1..3 at 0.55, 0.6, 0.65
    runs = offset_runs(base, [0, 20, 40, 60])
    s = arm_summary(runs)
    run_means = [0.5, 0.55, 0.6, 0.65]
    assert s["runs"] == pytest.approx(run_means)
    # Resampling 4 runs only: SE of a mean of 4 draws from the 4 run means (plug-in variance).
    assert s["se_runs"] == pytest.approx(math.sqrt(np.var(run_means) / 4), rel=0.1)
    # Both resampled: about the images-only SE of the per-image mean over runs, plus the run part.
    se_both = math.sqrt(runs.mean(axis=0).var() / 200 + np.var(run_means) / 4)
    assert s["ci95"][1] - s["ci95"][0] == pytest.approx(2 * 1.96 * se_both, rel=0.15)
    one = arm_summary(runs[:1])
    assert s["ci95"][1] - s["ci95"][0] > 1.15 * (one["ci95"][1] - one["ci95"][0])


def test_arm_versus_itself_is_exactly_zero():
    a = half_ones()[None, :]
    d = paired_difference(a, a)
    assert d["diff"] == 0 and d["ci95"] == [0.0, 0.0]
    assert not d["significant"] and d["p_value"] == 1.0
    assert d["images_needed"] is None and d["seeds_needed"] is None


def test_forty_flipped_images_are_significant():
    a = half_ones()
    b = a.copy()
    b[np.flatnonzero(a == 0)[:40]] = 1.0
    d = paired_difference(a[None, :], b[None, :])
    assert d["diff"] == pytest.approx(-0.1)
    # Paired per-image differences are -1 on 40 of 400 images: SE sqrt(0.1 * 0.9 / 400) = 0.015.
    se = math.sqrt(0.1 * 0.9 / 400)
    assert d["ci95"][0] == pytest.approx(-0.1 - 1.96 * se, abs=0.005)
    assert d["ci95"][1] == pytest.approx(-0.1 + 1.96 * se, abs=0.005)
    assert d["ci95"][1] < 0 and d["significant"] and d["p_value"] < 0.01


def test_pairing_narrows_the_ci_when_arms_share_image_difficulty():
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0, 1, 400)  # few-shot-like fractions, strongly image-dependent
    a = np.clip(difficulty + rng.normal(0, 0.05, 400), 0, 1)
    b = np.clip(difficulty - 0.03 + rng.normal(0, 0.05, 400), 0, 1)
    d = paired_difference(a[None, :], b[None, :])
    unpaired_se = math.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 400)
    paired_se = (a - b).std(ddof=1) / math.sqrt(400)
    assert paired_se < 0.3 * unpaired_se  # the construction does what it says
    assert d["se_images"] == pytest.approx(paired_se, rel=0.1)
    assert d["ci95"][1] - d["ci95"][0] < 0.5 * (2 * 1.96 * unpaired_se)
    assert d["significant"]


def test_paired_run_part_comes_from_each_arm_separately():
    base = np.zeros(200)
    base[::2] = 1.0
    a = offset_runs(base, [0, 20, 40])  # run means 0.5, 0.55, 0.6
    b = base[None, :]
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.05) and d["runs"] == [3, 1]
    assert d["se_runs"] == pytest.approx(math.sqrt(np.var([0.5, 0.55, 0.6]) / 3), rel=0.1)


def test_coverage_of_the_95_percent_ci():
    rng = np.random.default_rng(3)
    covered = 0
    for i in range(200):
        x = (rng.random((1, 200)) < 0.6).astype(float)
        lo, hi = arm_summary(x, n_boot=500, seed=i)["ci95"]
        covered += lo <= 0.6 <= hi
    assert 180 <= covered <= 198


def test_images_needed_hand_computation():
    z = 1.96 + 0.8416
    # Images part only: se_images * sqrt(400 / V') = 0.02 / z.
    assert images_needed(0.02, 0.02, 0.0, 400) == math.ceil(400 * (0.02 / (0.02 / z)) ** 2) == 3140
    # With a seed part: (0.05/z)^2 = 0.02^2 * 400/V' + 0.01^2.
    assert images_needed(-0.05, 0.02, 0.01, 400) == math.ceil(0.02 ** 2 * 400 / ((0.05 / z) ** 2 - 0.01 ** 2)) == 733
    assert images_needed(0.05, 0.02, 0.02, 400) is None  # 0.02 > 0.05 / z: seeds dominate
    assert images_needed(0.0, 0.02, 0.0, 400) is None


def test_seeds_needed_hand_computation():
    z = 1.96 + 0.8416
    # (0.05/z)^2 = 0.01^2 + 0.03^2 * 3/R'
    assert seeds_needed(0.05, 0.01, 0.03, 3) == math.ceil(0.03 ** 2 * 3 / ((0.05 / z) ** 2 - 0.01 ** 2)) == 13
    assert seeds_needed(0.05, 0.02, 0.0, 3) is None  # images dominate
    assert seeds_needed(0.0, 0.01, 0.03, 3) is None


@pytest.mark.parametrize("bad, match", [
    (np.ones(10), r"shape \(10,\)"), (np.ones((2, 1)), r"shape \(2, 1\)"),
    (np.array([[0.5, np.nan]]), "non-finite"), (np.array([[0.5, 1.5]]), r"\[0, 1\]"),
    (np.array([[0.5, -0.1]]), r"\[0, 1\]")])
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        arm_summary(bad)
    with pytest.raises(ValueError, match=match):
        paired_difference(np.full((1, 2), 0.5), bad)


def test_mismatched_val_images():
    with pytest.raises(ValueError, match=r"\(1, 3\).*\(2, 4\)"):
        paired_difference(np.ones((1, 3)), np.ones((2, 4)))


def summary(mean, lo, hi, runs):
    return {"mean": mean, "ci95": [lo, hi], "runs": runs, "se_images": 0.01, "se_runs": 0.0}


ARMS = {"hashtag": {"linear_top1": summary(0.532, 0.4871, 0.5779, [0.52, 0.53, 0.546]),
                    "few_shot_5_top1": summary(0.25, 0.2, 0.3, [0.24, 0.25, 0.26]),
                    "train_samples": 12800, "step_cost_s": 0.25},
        "swav": {"linear_top1": summary(0.5, 0.45, 0.55, [0.5]), "train_samples": 6400}}


def test_compare_table():
    lines = compare_table(ARMS).splitlines()
    assert lines[0] == "| arm | runs | train_samples | step_cost_s | linear_top1 | few_shot_5_top1 |"
    assert lines[2] == "| hashtag | 3 | 12800 | 0.25 | 53.2% [48.7%, 57.8%] | 25.0% [20.0%, 30.0%] |"
    assert lines[3] == "| swav | 1 | 6400 | - | 50.0% [45.0%, 55.0%] | - |"


def diff(d, lo, hi, sig, p, n_img, n_seed, runs=(3, 3)):
    return {"linear_top1": {"diff": d, "ci95": [lo, hi], "significant": sig, "p_value": p,
                            "images_needed": n_img, "seeds_needed": n_seed, "runs": list(runs)}}


def test_pairwise_report_lines():
    lines = pairwise_report({("hashtag", "swav"): diff(0.032, 0.008, 0.056, True, 0.01, 300, 2),
                             ("swav", "random"): diff(0.01, -0.02, 0.04, False, 0.5, 4000, 12),
                             ("hashtag", "random"): diff(0.01, -0.02, 0.04, False, 0.5, None, None, (1, 3))},
                            "linear_top1")
    assert lines[0] == "hashtag - swav: +3.2 points [95% CI +0.8, +5.6], significant (p=0.01)"
    assert lines[1] == ("swav - random: +1.0 points [95% CI -2.0, +4.0], not significant (p=0.5); would need "
                        "~4000 val images (or 12 pretraining seeds per arm) to detect a difference this size "
                        "with 80% power")
    assert "neither more val images nor more pretraining seeds" in lines[2] and "(1 run)" in lines[2]
    with pytest.raises(ValueError, match="few_shot_5_top1"):
        pairwise_report({("a", "b"): diff(0, 0, 0, False, 1, None, None)}, "few_shot_5_top1")


def test_plot_compare_writes_a_png_atomically(tmp_path):
    out = tmp_path / "compare.png"
    plot_compare(ARMS, out, title="demo")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert os.listdir(tmp_path) == ["compare.png"]
