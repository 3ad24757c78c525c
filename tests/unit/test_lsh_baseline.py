"""bench/lsh_baseline.py, the dedup bench's banding baseline, against brute force and the pigeonhole bound."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.lsh_baseline import Banding, candidate_pairs, default_bands, pairs_within_threshold
from dedup.phash import BITS


def test_banding_spans_partition_the_bits():
    for t in range(0, 20):
        for bands in (1, 2, 3, default_bands(t), 7, 63):
            spans = Banding(t, bands).spans()
            covered = sorted(i for s, w in spans for i in range(s, s + w))
            assert covered == list(range(BITS))


def flip_bits(h: int, positions) -> int:
    for p in positions:
        h ^= 1 << p
    return h


@settings(max_examples=300, deadline=None)
@given(h=st.integers(0, (1 << 63) - 1), t=st.integers(0, 14), bands=st.integers(1, 15), data=st.data())
def test_every_pair_within_threshold_shares_a_probed_band_value(h, t, bands, data):
    """The pigeonhole guarantee: flipping any <= t bits never escapes every probe."""
    if t // bands > 2:
        bands = t // 2 + 1  # keep the probe sets small
    banding = Banding(t, bands)
    k = data.draw(st.integers(0, t))
    positions = data.draw(st.lists(st.integers(0, BITS - 1), min_size=k, max_size=k, unique=True))
    g = flip_bits(h, positions)
    pairs = candidate_pairs(np.array([h], dtype=np.int64), np.array([g], dtype=np.int64), banding)
    assert pairs.tolist() == [[0, 0]]


@pytest.mark.parametrize("t,bands", [(6, 7), (6, 3), (10, 11), (10, 4), (5, 2)])
def test_pairs_within_threshold_equal_brute_force(t, bands):
    rng = np.random.default_rng(t * 100 + bands)
    index = rng.integers(0, 1 << 63, 3000, dtype=np.int64)
    queries = rng.integers(0, 1 << 63, 200, dtype=np.int64)
    for q in range(0, 200, 2):  # plant near copies at every distance 0..t+2
        i = int(rng.integers(0, 3000))
        d = q % (t + 3)
        queries[q] = flip_bits(int(index[i]), rng.choice(BITS, d, replace=False).tolist())
    bits = np.unpackbits(index.astype(">i8").view(np.uint8).reshape(-1, 8), axis=1).astype(bool)
    qbits = np.unpackbits(queries.astype(">i8").view(np.uint8).reshape(-1, 8), axis=1).astype(bool)
    dist = (bits[:, None, :] != qbits[None, :, :]).sum(-1)
    want = sorted(map(list, zip(*np.nonzero(dist <= t))))
    pairs, d, n_cand = pairs_within_threshold(index, queries, Banding(t, bands))
    assert pairs.tolist() == want
    assert d.tolist() == [dist[i, q] for i, q in want]
    assert n_cand < len(index) * len(queries) / 4  # random hashes rarely share a band


def test_banding_validates():
    with pytest.raises(ValueError, match="threshold"):
        Banding(63, 7)
    with pytest.raises(ValueError, match="bands"):
        Banding(6, 0)
    assert Banding(6, 3).radius == 2 and Banding(6, 7).radius == 0
    # probe masks: all masks of weight <= radius over the band's width, computed by itertools
    b = Banding(5, 2)
    w = b.spans()[0][1]
    want = {0} | {1 << i for i in range(w)} | {(1 << i) | (1 << j) for i, j in itertools.combinations(range(w), 2)}
    assert set(b.probe_masks(0)) == want and len(b.probe_masks(0)) == len(want)
