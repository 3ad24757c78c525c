"""Sampling arithmetic and label noise on plain values; statistical claims with fixed seeds."""
import numpy as np
import pytest
from scipy import stats

from pipeline.label_noise import noisy_labels
from pipeline.sampling import (bucket_draws, entry_keep_probability, fixed_point, importance,
                               metaclip_keep_probabilities, metaclip_keep_probability, multinomial, rng_for,
                               shuffled_position, split_sizes, strategy_weight)


def test_importance_is_max_inverse_sqrt_frequency():
    assert importance([4, 100]) == 0.5  # the rarest label dominates
    assert importance([10000]) == 0.01


def test_split_sizes_and_guard_rails():
    assert split_sizes(10, 0.7) == {"head": 7, "tail": 3}
    assert split_sizes(3, 0.5) == {"head": 2, "tail": 1}
    assert split_sizes(5, 1.0) == {"head": 5, "tail": 0}
    for bad in ((0, 0.7), (-1, 0.7)):
        with pytest.raises(ValueError, match="--samples"):
            split_sizes(*bad)
    for a in (-0.1, 1.5):
        with pytest.raises(ValueError, match="--alpha"):
            split_sizes(10, a)


def test_strategy_weights_by_hand():
    f = [4, 100]  # an image with two labels
    assert strategy_weight("natural", 0.0, f) == 2.0
    assert strategy_weight("sqrt", 0.0, f) == pytest.approx(0.5 + 0.1)
    assert strategy_weight("uniform", 0.0, f) == pytest.approx(0.25 + 0.01)
    assert strategy_weight("importance", 0.3, f) == 0.3
    with pytest.raises(ValueError, match="valid: importance, sqrt, uniform, natural"):
        strategy_weight("bogus", 0.0, f)


def test_multinomial_is_exact_in_count_and_fits_the_weights():
    w = fixed_point(np.array([1.0, 2.0, 3.0, 4.0, 0.5]))
    c = multinomial(100_000, w, rng_for(7, "t"))
    assert c.sum() == 100_000
    expected = 100_000 * w / w.sum()
    assert stats.chisquare(c, expected).pvalue > 0.001
    assert np.array_equal(c, multinomial(100_000, w, rng_for(7, "t")))  # seeded
    assert not np.array_equal(c, multinomial(100_000, w, rng_for(8, "t")))


def test_multinomial_wrong_weights_would_be_rejected():
    # the chi-square test above can fail: counts drawn from other weights are rejected
    w = fixed_point(np.array([1.0, 2.0, 3.0, 4.0, 0.5]))
    other = multinomial(100_000, fixed_point(np.array([1.0, 1.0, 1.0, 1.0, 1.0])), rng_for(7, "t"))
    assert stats.chisquare(other, 100_000 * w / w.sum()).pvalue < 1e-10


def test_bucket_draws_handles_huge_integer_sums():
    big = {0: 3 << 70, 1: 1 << 70}
    d = bucket_draws(40_000, big, rng_for(1, "b"))
    assert sum(d.values()) == 40_000
    assert stats.binomtest(d[0], 40_000, 0.75).pvalue > 0.001
    with pytest.raises(ValueError, match="empty split"):
        bucket_draws(5, {}, rng_for(1, "b"))


def test_fixed_point_rejects_bad_weights():
    with pytest.raises(ValueError):
        fixed_point(np.array([1.0, 0.0]))
    with pytest.raises(ValueError):
        fixed_point(np.array([np.nan]))


def test_label_noise_rate_and_replacement_distribution():
    rng = np.random.default_rng(0)
    q = np.array([50.0, 30.0, 15.0, 5.0])
    n = 200_000
    labels = np.zeros(n, dtype=np.int64)  # all label 0: replacements must follow q[1:]/(1-q0)
    out = noisy_labels(labels, rng.random(n), rng.random(n), 0.3, q)
    replaced = out != 0
    assert stats.binomtest(int(replaced.sum()), n, 0.3).pvalue > 0.001
    got = np.bincount(out[replaced], minlength=4)[1:]
    p = q[1:] / q[1:].sum()
    assert stats.chisquare(got, p * replaced.sum()).pvalue > 0.001
    assert np.array_equal(noisy_labels(labels[:10], np.ones(10) * 0.99, np.zeros(10), 0.3, q), labels[:10])


def test_label_noise_never_keeps_a_replaced_label():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 50_000)
    out = noisy_labels(labels, np.zeros(50_000), rng.random(50_000), 1.0, np.array([1.0, 2, 3, 4, 5]))
    assert not np.any(out == labels)


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 17, 64, 65, 1000, 4097, 100_003])
def test_shuffled_position_is_a_permutation(total):
    p = shuffled_position(np.arange(total), total, seed=7)
    assert np.array_equal(np.sort(p), np.arange(total))
    # each index on its own maps as in the whole: a bucket can number its own range alone
    lo, hi = total // 3, total // 3 + max(1, total // 5)
    assert np.array_equal(shuffled_position(np.arange(lo, min(hi, total)), total, seed=7), p[lo:min(hi, total)])


def test_shuffled_position_depends_on_the_seed_only():
    a = shuffled_position(np.arange(10_000), 10_000, seed=1)
    assert np.array_equal(a, shuffled_position(np.arange(10_000), 10_000, seed=1))
    assert (a != shuffled_position(np.arange(10_000), 10_000, seed=2)).mean() > 0.99
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        shuffled_position(np.array([10]), 10, seed=1)


def test_shuffled_position_is_uniform_per_index_and_uncorrelated():
    """Over 4,000 seeds the position of a fixed index is uniform (chi-square over 20 cells of 100
    positions), and positions of consecutive indices are independent (no rank correlation): what
    a shuffle of a bucket-major numbering needs, since neighbours there share a bucket."""
    total, seeds = 2_000, 4_000
    first = np.array([shuffled_position(np.array([0, 1]), total, s) for s in range(seeds)])
    cells = np.bincount(first[:, 0] // 100, minlength=20)
    assert stats.chisquare(cells).pvalue > 0.001
    assert abs(stats.spearmanr(first[:, 0], first[:, 1]).statistic) < 0.06  # |rho| ~ N(0, 1/63)
    # one seed, 100k indices: position against index shows no trend, and a block of consecutive
    # indices spreads over the whole range (the test can fail: the identity would not)
    p = shuffled_position(np.arange(100_000), 100_000, seed=3)
    assert abs(stats.spearmanr(np.arange(100_000), p).statistic) < 0.02
    block = np.bincount(p[:10_000] // 10_000, minlength=10)
    assert stats.chisquare(block).pvalue > 0.001
    identity = np.bincount(np.arange(10_000) // 10_000, minlength=10)
    assert stats.chisquare(identity + 1).pvalue < 1e-6


def test_multinomial_draws_in_chunks_same_stream_bounded_memory():
    """The level-one draw on the driver: M samples over a few buckets. Drawn a chunk at a time, it
    equals one draw of all M uniforms from the same generator, and holds a chunk, not M integers
    (the resample driver grew 311 -> 843 MB from 1M to 50M samples when it held them all)."""
    import tracemalloc

    from pipeline.sampling import DRAW_CHUNK
    w = np.array([3, 1, 7, 2**40, 5], dtype=np.int64)
    n = 3 * DRAW_CHUNK + 5
    u = rng_for(4, "x").integers(0, int(w.sum()), size=n, dtype=np.int64)
    expected = np.bincount(np.searchsorted(np.cumsum(w), u, side="right"), minlength=len(w))
    assert np.array_equal(multinomial(n, w, rng_for(4, "x")), expected)
    tracemalloc.start()
    try:
        counts = multinomial(20_000_000, np.arange(1, 51, dtype=np.int64), rng_for(0, "buckets"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts.sum() == 20_000_000
    assert peak < 4 * 8 * DRAW_CHUNK  # a few chunk-sized arrays; one draw of all would be 160 MB x 2


def test_metaclip_keep_probability_by_hand():
    # cap T = 50: a label of 2000 images keeps each with 50/2000 = 0.025, one of 200 with 0.25,
    # one of 20 (under the cap) with 1
    assert entry_keep_probability(2000, 50) == 0.025
    assert entry_keep_probability(20, 50) == 1.0
    assert metaclip_keep_probability([2000], 50) == pytest.approx(0.025)
    # two labels: 1 - (1 - 0.025)(1 - 0.25) = 1 - 0.73125
    assert metaclip_keep_probability([2000, 200], 50) == pytest.approx(0.26875)
    assert metaclip_keep_probability([2000, 20], 50) == 1.0  # a label under the cap keeps its images
    # three labels of 100 with T = 10: 1 - 0.9^3 = 0.271 (not the sum 0.3: the any-entry rule)
    assert metaclip_keep_probability([100, 100, 100], 10) == pytest.approx(0.271)
    assert metaclip_keep_probability([], 10) == 0.0
    for bad in ((0, 10), (5, 0)):
        with pytest.raises(ValueError, match="cap"):
            entry_keep_probability(*bad)


def test_metaclip_keep_probabilities_of_a_list_column_by_hand():
    f = np.array([2000, 200, 20, 100, 0])  # label 4 is carried by no image
    # rows [0], [0, 1], [], [2, 3], [3, 3, 3] with T = 10: 10/2000, 1 - (1 - 0.005)(1 - 0.05), no label,
    # 1 - (1 - 0.5)(1 - 0.1), 1 - 0.9^3
    offsets = np.array([0, 1, 3, 3, 5, 8])
    labels = np.array([0, 0, 1, 2, 3, 3, 3, 3])
    p = metaclip_keep_probabilities(offsets, labels, f, 10)
    assert p == pytest.approx([0.005, 0.05475, 0.0, 0.55, 0.271])
    # a tiny p_h stays exact (1 - (1 - p) would lose digits): T / f = 1e-12
    assert metaclip_keep_probabilities(np.array([0, 1]), np.array([0]), np.array([10 ** 12]), 1)[0] == \
        pytest.approx(1e-12, rel=1e-9)
    # a sliced Arrow list column passes its own offsets into the unsliced values
    import pyarrow as pa
    col = pa.array([[0], [0, 1], [], [2, 3], [3, 3, 3]], pa.list_(pa.int32())).slice(1, 3)
    assert metaclip_keep_probabilities(col.offsets.to_numpy(), col.values.to_numpy(), f, 10) == \
        pytest.approx([0.05475, 0.0, 0.55])
    with pytest.raises(ValueError, match="f\\(h\\) >= 1"):
        metaclip_keep_probabilities(np.array([0, 1]), np.array([4]), f, 10)
