"""Random-hyperplane LSH of the dedup job's embedding method, against independent computations."""
import math

import numpy as np
import pytest

from pipeline.simhash import SimHashTables, centred_unit, cosine_distance


def pair_at_cosine(rng, dim: int, cos: float) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal(dim)
    a /= np.linalg.norm(a)
    o = rng.standard_normal(dim)
    o -= (o @ a) * a
    o /= np.linalg.norm(o)
    return a, cos * a + math.sqrt(1 - cos * cos) * o


def test_keys_are_the_sign_bits_of_the_projections():
    t = SimHashTables(tables=3, bits=5, seed=7)
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    planes = t.planes(10)
    assert planes.shape == (10, 15)
    keys = t.keys(x)
    for i in range(4):
        for j in range(3):
            bits = [int(x[i] @ planes[:, j * 5 + b] > 0) for b in range(5)]
            assert keys[i, j] == sum(bit << b for b, bit in enumerate(bits))
    assert np.array_equal(t.keys(x), SimHashTables(3, 5, 7).keys(x))  # same seed: same keys anywhere
    assert not np.array_equal(t.keys(x), SimHashTables(3, 5, 8).keys(x))


def test_one_bit_disagrees_with_probability_angle_over_pi():
    rng = np.random.default_rng(1)
    t = SimHashTables(tables=200, bits=1, seed=3)
    for cos in (0.9, 0.5, 0.0):
        a, b = pair_at_cosine(rng, 32, cos)
        diff = np.mean(t.keys(a[None]) != t.keys(b[None]))
        p = math.acos(cos) / math.pi
        assert abs(diff - p) < 4 * math.sqrt(p * (1 - p) / 200) + 1e-9, (cos, diff, p)


@pytest.mark.parametrize("cos", [0.95, 0.8, 0.3])
def test_candidate_rate_matches_collision_probability(cos):
    rng = np.random.default_rng(2)
    n, hits = 400, 0
    for s in range(n):
        t = SimHashTables(tables=8, bits=6, seed=s)
        a, b = pair_at_cosine(rng, 24, cos)
        hits += bool(np.any(t.keys(a[None]) == t.keys(b[None])))
    p = t.collision_probability(cos)
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (cos, hits / n, p)


def test_defaults_find_near_duplicates_and_few_unrelated_pairs():
    t = SimHashTables()
    assert t.collision_probability(0.9) > 0.99  # the default threshold, cosine distance 0.1
    assert t.collision_probability(0.0) < t.tables / 2 ** t.bits * 1.01


def test_centred_unit_and_cosine_distance():
    x = np.array([[3.0, 4.0], [1.0, 1.0], [2.0, 0.0]])
    u = centred_unit(x, np.array([1.0, 1.0]))
    assert np.allclose(u[0], np.array([2.0, 3.0]) / math.sqrt(13))
    assert np.allclose(u[1], [0.0, 0.0])  # the mean itself: stays zero, no NaN
    assert np.allclose(u[2], np.array([1.0, -1.0]) / math.sqrt(2))
    assert np.allclose(cosine_distance(u[[0, 2]], u[[0, 0]]), [0.0, 1.0 - (2 - 3) / (math.sqrt(2) * math.sqrt(13))], atol=1e-6)


def test_bad_sizes_are_refused():
    for kw in ({"tables": 0}, {"bits": 0}, {"bits": 63}):
        with pytest.raises(ValueError):
            SimHashTables(**kw)


def test_candidate_pairs_are_exactly_the_pairs_sharing_a_key():
    from pipeline.simhash import candidate_pairs

    rng = np.random.default_rng(5)
    index, queries = rng.integers(0, 6, (40, 3)), rng.integers(0, 6, (9, 3))
    want = {(i, q) for i in range(40) for q in range(9) if np.any(index[i] == queries[q])}
    got = candidate_pairs(index, queries)
    assert {tuple(map(int, p)) for p in got} == want and len(got) == len(want)
