"""dedup/ann.py: faiss indexes of evaluation variants against brute force written here."""
import numpy as np
import pytest

from dedup.ann import EXACT_MAX, FLAT_WORK, IndexSpec, build_index, hash_codes, index_bytes, load_index, nearest_owners, search
from dedup.phash import hamming


def clustered_hashes(rng, images: int, variants: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner): `variants` hashes per image, each its base hash with 0-20% of bits flipped
    (how crop variants of one picture scatter around its hash)."""
    base = rng.integers(0, 1 << 63, images, dtype=np.int64)
    owner = np.repeat(np.arange(images), variants)
    flips = rng.random((len(owner), 63)) < rng.uniform(0, 0.2, (len(owner), 1))
    mask = (flips * (np.uint64(1) << np.arange(63, dtype=np.uint64))).sum(1, dtype=np.uint64).view(np.int64)
    return base[owner] ^ mask, owner


def near_queries(rng, hashes: np.ndarray, n: int, max_bits: int) -> np.ndarray:
    """n queries: half random hashes, half a random indexed hash with 0..max_bits bits flipped."""
    q = rng.integers(0, 1 << 63, n, dtype=np.int64)
    for k, i in enumerate(rng.choice(len(hashes), n // 2, replace=False)):
        bits = rng.choice(63, k % (max_bits + 1), replace=False)
        q[k] = hashes[i] ^ np.int64(sum(1 << int(b) for b in bits))
    return q


def test_binary_codes_give_hamming_distances():
    rng = np.random.default_rng(0)
    db = rng.integers(0, 1 << 63, 300, dtype=np.int64)
    q = rng.integers(0, 1 << 63, 20, dtype=np.int64)
    assert hash_codes(db).shape == (300, 8) and hash_codes(db).dtype == np.uint8
    d, i = search(build_index(db, IndexSpec("binary", "flat")), "binary", q, 300)
    for a in range(20):
        want = sorted(hamming(int(q[a]), int(h)) for h in db)
        assert d[a].tolist() == want
        assert all(hamming(int(q[a]), int(db[j])) == dist for j, dist in zip(i[a], d[a]))


def test_float_flat_is_exact_cosine_distance():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((200, 16)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:10] + 0.05 * rng.standard_normal((10, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d, i = search(build_index(db, IndexSpec("float", "flat")), "float", q, 5)
    brute = 1.0 - q @ db.T
    for a in range(10):
        order = np.argsort(brute[a], kind="stable")[:5]
        assert i[a].tolist() == order.tolist()
        np.testing.assert_allclose(d[a], brute[a][order], atol=1e-5)
    assert i[:, 0].tolist() == list(range(10))  # each query's source is nearest


def test_missing_neighbours_are_minus_one_and_inf():
    db = np.array([1, 2, 3], np.int64)
    d, i = search(build_index(db, IndexSpec("binary", "flat")), "binary", np.array([0], np.int64), 5)
    assert i[0, 3:].tolist() == [-1, -1] and np.isinf(d[0, 3:]).all()
    d, i = search(build_index(np.zeros(0, np.int64), IndexSpec("binary")), "binary", np.array([7], np.int64), 2)
    assert i.tolist() == [[-1, -1]]


def test_auto_is_flat_for_small_indexes_or_few_queries_then_hnsw():
    spec = IndexSpec("binary")
    assert spec.resolved(EXACT_MAX["binary"]) == "flat" and spec.resolved(EXACT_MAX["binary"] + 1) == "hnsw"
    n = 4 * EXACT_MAX["binary"]
    assert spec.resolved(n, FLAT_WORK["binary"] // n) == "flat"  # few queries: exhaustive search is cheaper
    assert spec.resolved(n, FLAT_WORK["binary"] // n + 1) == "hnsw"
    assert spec.resolved(n, None) == "hnsw"
    assert IndexSpec("float", "hnsw").resolved(10) == "hnsw"
    with pytest.raises(ValueError, match="unknown index 'ivf'"):
        IndexSpec("binary", "ivf")
    with pytest.raises(ValueError, match="hnsw_m must be in"):
        IndexSpec("float", hnsw_m=1)


@pytest.mark.parametrize("kind", ["binary", "float"])
def test_serialised_index_searches_the_same(kind):
    rng = np.random.default_rng(2)
    db = (rng.integers(0, 1 << 63, 2000, dtype=np.int64) if kind == "binary"
          else rng.standard_normal((2000, 8)).astype(np.float32))
    q = db[:50]
    index = build_index(db, IndexSpec(kind, "hnsw"))
    data = index_bytes(index, kind)
    assert data.dtype == np.uint8
    again = load_index(data, kind, ef_search=128)
    for a, b in zip(search(index, kind, q, 4), search(again, kind, q, 4)):
        np.testing.assert_array_equal(a, b)


def naive_nearest_owners(d, ids, owner, k):
    out = []
    for qi in range(ids.shape[0]):
        best = {}
        for dist, v in zip(d[qi], ids[qi]):
            if v < 0:
                continue
            o = int(owner[v])
            if o not in best or (dist, v) < best[o]:
                best[o] = (float(dist), int(v))
        ranked = sorted(((dist, v, o) for o, (dist, v) in best.items()))[:k]
        out += [(qi, o, v, dist) for dist, v, o in ranked]
    return out


def test_nearest_owners_against_a_loop():
    rng = np.random.default_rng(3)
    owner = rng.integers(0, 12, 60)
    ids = rng.integers(-1, 60, (40, 25))
    d = rng.integers(0, 10, (40, 25)).astype(np.float32)
    for k in (1, 3, 50):
        got = list(zip(*[a.tolist() for a in nearest_owners(d, ids, owner, k)]))
        assert got == naive_nearest_owners(d, ids, owner, k)


def image_recall(approx, exact, owner, threshold):
    """Share of the (query, image) pairs within threshold under exact search that approx finds."""
    def pairs(res):
        d, i = res
        return {(q, int(owner[v])) for q in range(len(d)) for dist, v in zip(d[q], i[q]) if v >= 0 and dist <= threshold}
    want = pairs(exact)
    return len(pairs(approx) & want) / len(want), len(want)


def test_hnsw_recall_against_exact_search_binary():
    """The approximate index finds >= 99% of the (pretraining image, evaluation image) pairs within
    pHash's threshold that exact search finds, on 40,000 clustered variants (2,000 images x 20)."""
    rng = np.random.default_rng(4)
    db, owner = clustered_hashes(rng, 2000, 20)
    q = near_queries(rng, db, 2000, 8)
    exact = search(build_index(db, IndexSpec("binary", "flat")), "binary", q, 64)
    approx = search(build_index(db, IndexSpec("binary", "hnsw")), "binary", q, 64)
    recall, n = image_recall(approx, exact, owner, 6)
    assert n > 700 and recall >= 0.99, (recall, n)


def test_hnsw_recall_against_exact_search_float():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((2000, 32)).astype(np.float32)
    owner = np.repeat(np.arange(2000), 10)
    db = centres[owner] + 0.3 * rng.standard_normal((len(owner), 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[rng.choice(len(db), 1000, replace=False)] + 0.03 * rng.standard_normal((1000, 32)).astype(np.float32)
    q = np.concatenate([q, rng.standard_normal((1000, 32)).astype(np.float32)])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = search(build_index(db, IndexSpec("float", "flat")), "float", q, 64)
    approx = search(build_index(db, IndexSpec("float", "hnsw")), "float", q, 64)
    recall, n = image_recall(approx, exact, owner, 0.1)
    assert n > 500 and recall >= 0.99, (recall, n)
