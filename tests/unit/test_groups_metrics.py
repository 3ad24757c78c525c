"""The per-group metrics (transfer/groups/metrics.py, ci.py) on constructed scores, labels and
embeddings whose every figure is worked out by hand in the test."""
import numpy as np
import pytest

from transfer.groups import ci, metrics
from transfer.groups.harmful import type_rates
from transfer.groups.retrieval import precision_by_group

nan = float("nan")


def test_top_k_and_a_hit_is_any_label_among_the_top_k():
    scores = np.array([[0.1, 0.5, 0.2, 0.9],
                       [0.4, 0.3, 0.2, 0.1],
                       [0.3, 0.3, 0.1, 0.0]])  # a tie: the lower index first
    assert metrics.top_k(scores, 2).tolist() == [[3, 1], [0, 1], [0, 1]]
    pred = metrics.top_k(scores, 2)
    # image 0: labels {2, 3}, 3 predicted; image 1: {2}, not in [0, 1]; image 2: {5, 1}, 1 predicted
    assert metrics.hits_any(pred, [[2, 3], [2], [5, 1]]).tolist() == [1.0, 0.0, 1.0]
    assert metrics.hits_any(pred[:, :1], [[2, 3], [0], [1]]).tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="3 predictions for 2 label sets"):
        metrics.hits_any(pred, [[1], [2]])


def test_per_household_averaging_weighs_households_not_images():
    # group 0: household A hits 3 of 4 images (0.75), household B 0 of 1 (0.0) -> (0.75 + 0) / 2 = 0.375
    # (the image mean would be 3/5 = 0.6); group 1: household C hits 1 of 2 -> 0.5
    hits = [1, 1, 1, 0, 0, 1, 0]
    homes = ["A", "A", "A", "A", "B", "C", "C"]
    groups = [0, 0, 0, 0, 0, 1, 1]
    got = metrics.group_means(hits, groups, 3, clusters=homes)
    assert got[:2].tolist() == [0.375, 0.5] and np.isnan(got[2])  # group 2 has no image
    assert metrics.group_means(hits, groups, 2).tolist() == [0.6, 0.5]
    ids, means = metrics.cluster_means(hits, homes)
    assert ids.tolist() == ["A", "B", "C"] and means.tolist() == [0.75, 0.0, 0.5]


def test_household_bootstrap_draws_households():
    # household A: 3 images all hits, B: 1 image no hit. Drawing households gives replicate means in
    # {0, 0.5, 1} only (0.5 with probability 2 * 1/2 * 1/2); drawing images would give 0.25, 0.75 too.
    hits, homes, groups = [1.0, 1.0, 1.0, 0.0], ["A", "A", "A", "B"], [0, 0, 0, 0]
    reps = ci.replicate_weights(groups, 1, clusters=homes, n_boot=4000, seed=0)
    assert np.allclose(reps.weights[0].sum(1), 1.0)
    r = ci.group_means(hits, reps)[:, 0]
    assert set(np.round(r, 9).tolist()) <= {0.0, 0.5, 1.0}
    assert abs(np.mean(np.isclose(r, 0.5)) - 0.5) < 0.03
    images = ci.group_means(hits, ci.replicate_weights(groups, 1, n_boot=4000, seed=0))[:, 0]
    assert np.isclose(images, 0.75).any() and np.isclose(images, 0.25).any()
    lo, hi = ci.interval(r)
    assert lo == 0.0 and hi == 1.0


def test_interval_of_a_constant_group_is_a_point_and_nan_for_an_empty_group():
    reps = ci.replicate_weights([0, 0, 0, 1, 1], 3, n_boot=200, seed=1)
    r = ci.group_means([1.0, 1.0, 1.0, 0.0, 1.0], reps)
    iv = ci.interval(r)
    assert iv[:, 0].tolist() == [1.0, 1.0] and 0.0 <= iv[0, 1] <= 0.5 and iv[1, 1] == 1.0
    assert np.isnan(iv[:, 2]).all()
    assert ci.figure(0.8, np.array([0.7, 0.8, 0.9] * 10)) == {"value": 0.8, "ci95": [0.7, 0.9]}


def test_a_zero_or_full_rate_gets_the_exact_bound_and_its_differences_widen():
    from scipy.stats import beta

    # group 0: 16 images, none a hit; group 1: 16 images, all hits; group 2: half and half
    x = np.array([0.0] * 16 + [1.0] * 16 + [0.0, 1.0] * 8)[:, None]
    groups = np.repeat([0, 1, 2], 16)
    reps = ci.replicate_weights(groups, 3, n_boot=400, seed=0)
    point = metrics.group_means(x, groups, 3)
    rate, diff = ci.rates_and_differences(point, ci.group_means(x, reps), reps)
    upper = beta.ppf(0.975, 1, 16)  # Clopper-Pearson's upper bound of 0 of 16, from the beta quantile
    assert upper == pytest.approx(0.206, abs=1e-3)
    assert rate[0][0]["ci95"] == pytest.approx([0.0, upper]) and rate[1][0]["ci95"] == pytest.approx([1 - upper, 1.0])
    lo2, hi2 = rate[2][0]["ci95"]  # a mixed group keeps its bootstrap interval
    assert 0.2 < lo2 < 0.5 < hi2 < 0.8
    # group 0's difference (0 - the mean of 1 and 0.5 = -0.75): the bootstrap interval comes from
    # group 2 alone; its high end gains group 0's gain (upper) and half of group 1's (upper / 2),
    # its low end nothing (0 cannot fall, 1 cannot rise)
    d = diff[0][0]
    assert d["value"] == pytest.approx(-0.75)
    boot_lo, boot_hi = 0 - (1 + hi2) / 2, 0 - (1 + lo2) / 2
    assert d["ci95"][1] == pytest.approx(boot_hi + upper + upper / 2, abs=0.02)
    assert d["ci95"][0] == pytest.approx(boot_lo, abs=0.02)
    # over households: the bound counts households, not images (4 households of 4 images)
    hreps = ci.replicate_weights(groups, 3, clusters=np.arange(48) // 4, n_boot=100, seed=0)
    hrate, _ = ci.rates_and_differences(point, ci.group_means(x, hreps), hreps)
    assert hrate[0][0]["ci95"][1] == pytest.approx(beta.ppf(0.975, 1, 4))


def test_income_buckets_round_ln_income_over_three():
    # ln(90.02) = 4.5 and ln(1808.04) = 7.5 are the bucket edges: 1.5 -> 2 and 2.5 -> 2 (half to
    # even) would matter only exactly there
    incomes = [2, 30, 89, 91, 1800, 1810, 20000]
    # ln/3: 0.23 (round 0 -> low), 1.13, 1.496, 1.504, 2.4985, 2.5003, 3.30
    assert metrics.income_bucket(incomes).tolist() == ["low", "low", "low", "medium", "medium", "high", "high"]
    with pytest.raises(ValueError, match="positive"):
        metrics.income_bucket([100, 0])


def test_class_accuracy_per_group():
    acc = metrics.class_group_accuracy(correct=[1, 0, 1, 1], labels=[0, 0, 1, 0], groups=[0, 0, 0, 1],
                                       num_classes=3, num_groups=2)
    assert acc[0, :2].tolist() == [0.5, 1.0] and np.isnan(acc[0, 2])
    assert acc[1, 0] == 1.0 and np.isnan(acc[1, 1:]).all()


def test_eighty_percent_rule_matrix():
    acc = np.array([[1.0, 0.5, nan],    # country A: no image of class 2
                    [0.7, 0.5, 0.9],    # B
                    [0.9, 0.3, 0.2],    # C
                    [nan, nan, nan]])   # D: no class at all
    pct, shared = metrics.eighty_percent_matrix(acc)
    # A vs B (classes 0, 1): 1.0 < 0.56? no; 0.5 < 0.4? no -> 0%.  B vs A: 0.7 < 0.8 yes; 0.5 < 0.4 no -> 50%
    # A vs C: 1.0 < 0.72 no; 0.5 < 0.24 no -> 0%.                   C vs A: 0.9 < 0.8 no; 0.3 < 0.4 yes -> 50%
    # B vs C (0, 1, 2): 0.7 < 0.72 yes; 0.5 < 0.24 no; 0.9 < 0.16 no -> 1/3.
    # C vs B: 0.9 < 0.56 no; 0.3 < 0.4 yes; 0.2 < 0.72 yes -> 2/3
    want = [[0, 0, 0], [50, 0, 100 / 3], [50, 200 / 3, 0]]
    assert np.allclose(pct[:3, :3], want)
    assert np.isnan(pct[3]).all() and np.isnan(pct[:, 3]).all()
    assert shared.tolist() == [[2, 2, 2, 0], [2, 3, 3, 0], [2, 3, 3, 0], [0, 0, 0, 0]]
    # another rule: B vs C at 0.5: 0.7 < 0.45 no; 0.5 < 0.15 no; 0.9 < 0.1 no -> 0
    assert metrics.eighty_percent_matrix(acc, rule=0.5)[0][1, 2] == 0.0
    # leading replicate axes pass through
    assert np.allclose(metrics.eighty_percent_matrix(np.stack([acc[:3], acc[:3]]))[0], [want, want])


def test_top_association_differences_and_relative_differences():
    rates = np.array([[0.5, 0.1, 0.0, 0.2],
                      [0.1, 0.1, 0.3, 0.2],
                      [0.3, 0.1, 0.1, 0.4]])
    got = metrics.association_differences(rates, top=3)
    # group 0: others' mean [0.2, 0.1, 0.2, 0.3] -> diff [0.3, 0, -0.2, -0.1]
    assert [e["label"] for e in got[0]] == [0, 2, 3]
    assert [e["diff"] for e in got[0]] == pytest.approx([0.3, -0.2, -0.1])
    assert [e["relative"] for e in got[0]] == pytest.approx([1.5, -1.0, -1 / 3])
    assert [e["others"] for e in got[0]] == pytest.approx([0.2, 0.2, 0.3])
    # group 1: others [0.4, 0.1, 0.05, 0.3] -> diff [-0.3, 0, 0.25, -0.1]
    assert [e["label"] for e in got[1]] == [0, 2, 3]
    assert [e["relative"] for e in got[1]] == pytest.approx([-0.75, 5.0, -1 / 3])
    # group 2: others [0.3, 0.1, 0.15, 0.2] -> diff [0, 0, -0.05, 0.2]
    assert [e["label"] for e in got[2][:2]] == [3, 2]
    assert [e["diff"] for e in got[2][:2]] == pytest.approx([0.2, -0.05])
    two = metrics.association_differences(np.array([[0.2], [0.0]]), top=20)
    assert two[0][0]["relative"] is None and two[1][0]["relative"] == pytest.approx(-1.0)


def test_associations_from_probabilities_with_intervals():
    from transfer.groups.associations import associations

    # 6 hashtags, k=2. Group 0 (4 images) always predicts {0, 1}; group 1 (4 images): {0, 2} twice,
    # {3, 2} twice. Rates: g0 [1, 1, 0, 0, 0, 0], g1 [0.5, 0, 1, 0.5, 0, 0]
    p = np.zeros((8, 6))
    p[:4, 0], p[:4, 1] = 0.6, 0.3
    p[4:6, 0], p[4:6, 2] = 0.5, 0.4
    p[6:, 3], p[6:, 2] = 0.5, 0.4
    p += np.arange(6) * 1e-3  # the other hashtags below, ordered
    p[:, 5] = 0.0
    r = associations(p, [0] * 4 + [1] * 4, 2, k=2, top=3, hashtag=3, n_boot=500, seed=0)
    assert np.allclose(r["rates"], [[1, 1, 0, 0, 0, 0], [0.5, 0, 1, 0.5, 0, 0]])
    g0 = r["top"][0]  # diffs g0 - g1: [0.5, 1, -1, -0.5, 0, 0] -> labels 1, 2, then 0 (tie with 3: lower first)
    assert [e["label"] for e in g0] == [1, 2, 0] and [e["diff"] for e in g0] == pytest.approx([1, -1, 0.5])
    assert g0[0]["relative"] is None and g0[2]["relative"] == pytest.approx(1.0)
    # every image of group 0 predicts it: the exact lower bound of 4 of 4, 0.025 ** (1 / 4)
    assert g0[0]["rate_ci95"] == pytest.approx([0.397635, 1.0], abs=1e-6)
    # 1 - (rate of g1, resampled from two 1s and two 0s): the bootstrap's [0, 1], its low end
    # widened by what group 0's rate interval gained below 1 (1 - 0.397635)
    assert g0[2]["diff_ci95"] == pytest.approx([-0.602365, 1.0], abs=1e-6)
    h = r["hashtag"]
    assert [e["count"] for e in h] == [0, 2] and [e["images"] for e in h] == [4, 4]
    assert [e["rate"]["value"] for e in h] == [0.0, 0.5]
    assert h[0]["rate"]["ci95"] == pytest.approx([0.0, 0.602365], abs=1e-6)  # 0 of 4: 1 - 0.025 ** (1 / 4)
    assert [e["diff"]["value"] for e in h] == [-0.5, 0.5]


def test_label_type_hits_at_thresholds():
    types = ("Human", "Possibly-Human", "Non-Human", "Crime")
    label_types = [{"Human"}, {"Non-Human"}, {"Crime", "Human"}, set()]
    pred, conf = np.array([[0, 1], [2, 3]]), np.array([[0.5, 0.05], [0.2, 0.9]])
    # (Human, Possibly-Human, Non-Human, Crime) per image
    assert metrics.type_hits(pred, conf, label_types, types, 0.0).tolist() == [[1, 0, 1, 0], [1, 0, 0, 1]]
    assert metrics.type_hits(pred, conf, label_types, types, 0.1).tolist() == [[1, 0, 0, 0], [1, 0, 0, 1]]
    assert metrics.type_hits(pred, conf, label_types, types, 0.3).tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert metrics.type_hits(pred, conf, label_types, types, 0.8).tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]


def test_type_rates_per_group_with_harmful_the_union_of_non_human_and_crime():
    label_types = [{"Non-Human"}, {"Crime"}, {"Human"}, set()]
    # k=2. Group 0: image a top-2 (0 @ .6, 3 @ .3), image b (2 @ .7, 1 @ .2);
    #      group 1: image c (2 @ .5, 3 @ .4), image d (1 @ .45, 0 @ .05)
    p = np.array([[0.6, 0.04, 0.06, 0.3], [0.05, 0.2, 0.7, 0.05],
                  [0.05, 0.05, 0.5, 0.4], [0.05, 0.45, 0.02, 0.03]])
    r = type_rates(p, [0, 0, 1, 1], 2, label_types, [0.0, 0.1, 0.3], k=2, n_boot=200, seed=0)
    val = {t: [[f["value"] for f in row] for row in r[t]["rate"]] for t in r}
    # columns Human, Possibly-Human, Non-Human, Crime, harmful
    assert val[0.0] == [[0.5, 0, 0.5, 0.5, 1.0], [0.5, 0, 0.5, 0.5, 0.5]]  # d's 0 @ .05 counts at 0; c is not harmful
    assert val[0.1] == [[0.5, 0, 0.5, 0.5, 1.0], [0.5, 0, 0.0, 0.5, 0.5]]
    assert val[0.3] == [[0.5, 0, 0.5, 0.0, 0.5], [0.5, 0, 0.0, 0.5, 0.5]]  # b's crime @ .2 drops
    diffs = [[f["value"] for f in row] for row in r[0.1]["diff"]]
    assert diffs[0][4] == pytest.approx(0.5) and diffs[1][4] == pytest.approx(-0.5)
    assert r[0.1]["rate"][0][4]["ci95"] == pytest.approx([0.158114, 1.0], abs=1e-6)  # 2 of 2: 0.025 ** (1 / 2)


def _unit(deg):
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]


def test_nearest_neighbours_by_cosine_and_precision_at_k():
    db = np.array([_unit(a) for a in (0, 10, 20, 90, 100)]) * np.array([[1], [7], [0.5], [3], [1]])  # norms differ
    attr = np.array(["a", "a", "b", "b", "b"])
    q = np.array([_unit(4), _unit(93)])
    nn = metrics.neighbours(q, db, 5)
    assert nn.tolist() == [[0, 1, 2, 3, 4], [3, 4, 2, 1, 0]]
    p = metrics.precision_at_k(nn, np.array(["a", "b"]), attr, [1, 2, 3, 5])
    assert p.tolist() == [[1, 1, 2 / 3, 2 / 5], [1, 1, 1, 3 / 5]]
    with pytest.raises(ValueError, match="K=6"):
        metrics.neighbours(q, db, 6)
    with pytest.raises(ValueError, match="all zeros"):
        metrics.neighbours(np.zeros((1, 2)), db, 1)


def test_precision_by_group_searching_a_set_against_itself():
    # three points per attribute around 0 and 90 degrees (no two pairs equally far); self excluded,
    # each query's two nearest share its attribute, the third nearest does not
    x = np.array([_unit(a) for a in (0, 4, 10, 90, 95, 101)])
    attr = np.array(["a"] * 3 + ["b"] * 3, dtype=object)
    r = precision_by_group(x, x, attr, attr, np.array([0, 0, 0, 1, 1, 1]), 2, [1, 2, 3], True, n_boot=100)
    assert [[f["value"] for f in row] for row in r["precision"]] == [[1, 1, 2 / 3], [1, 1, 2 / 3]]
    assert r["precision"][0][2]["ci95"] == pytest.approx([2 / 3, 2 / 3])
    assert [row[0]["value"] for row in r["diff"]] == [0.0, 0.0]
    nn = metrics.neighbours(x, x, 2, exclude_self=True)
    assert nn.tolist() == [[1, 2], [0, 2], [1, 0], [4, 5], [3, 5], [4, 3]]
