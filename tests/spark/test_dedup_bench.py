"""bench/dedup_bench.py at tiny sizes: the structure of its results, and what must hold, checked
against brute force written here (Hamming distances with numpy's popcount, cosine by matmul)."""
import json

import numpy as np
import pytest

from bench import dedup_bench

THRESHOLD, FLOAT_THRESHOLD, BANDS, SEARCH_K, PROBE = 6, 0.1, 7, 64, 8
ARGS = ["--sizes", "2000,10000", "--float-sizes", "2000", "--dim", "16", "--variants", "50", "--queries", "200",
        "--job-queries", "3000", "--threshold", str(THRESHOLD), "--float-threshold", str(FLOAT_THRESHOLD),
        "--bands", str(BANDS), "--search-k", str(SEARCH_K), "--probe", str(PROBE)]


def hamming(a, b):
    return np.bitwise_count(a[:, None] ^ b[None, :])


def per_image_min(dist, owner):
    """(queries, images) nearest variant of each image; owner is contiguous per image."""
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return np.minimum.reduceat(dist, starts, axis=1)


def naive_band_candidates(x, q):
    """(query, variant) pairs equal in some 9-bit band of the 63 bits (7 bands, from the top)."""
    same = np.zeros((len(q), len(x)), bool)
    for b in range(BANDS):
        shift = 63 - 9 * (b + 1)
        same |= ((q[:, None] >> shift) & 511) == ((x[None, :] >> shift) & 511)
    return int(same.sum())


@pytest.fixture(scope="module")
def result(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("dedup-bench")
    res = dedup_bench.main(ARGS + ["--workdir", str(out)])
    assert json.loads((out / "dedup-results.json").read_text()) == json.loads(json.dumps(res))
    return res


def cfg():
    from jobs.lib.config import parse_config

    return parse_config(dedup_bench.DedupBenchConfig, ARGS, "")


def test_rows_for_every_kind_size_and_index(result):
    got = [(r["kind"], r["n"], r["index"]) for r in result["index_rows"]]
    assert got == [("binary", 2000, "flat"), ("binary", 2000, "hnsw"), ("binary", 10000, "flat"),
                   ("binary", 10000, "hnsw"), ("float", 2000, "flat"), ("float", 2000, "hnsw")]
    assert [r["n"] for r in result["banding_rows"]] == [2000, 10000]
    assert [r["queries"] for r in result["job_rows"]] == [3000]
    assert {"hnsw_binary", "flat_binary", "job_binary", "banding"} <= set(result["estimate"])


def test_distance_computations_flat_all_hnsw_counted_and_fewer(result):
    for r in result["index_rows"]:
        if r["index"] == "flat":
            assert r["distances_per_query"] == r["n"] and r["distances_per_random"] == r["n"]
        else:  # faiss counted them (IndexBinaryHNSW too), and the graph skips most of the index
            assert 0 < r["distances_per_planted"] and 0 < r["distances_per_random"]
    big = [r for r in result["index_rows"] if r["n"] == 10000 and r["index"] == "hnsw"][0]
    assert big["distances_per_query"] < 10000 / 2


def test_planted_copies_are_found_and_hnsw_agrees_with_flat(result):
    for r in result["index_rows"]:
        if r["index"] == "flat":
            assert r["planted_recall"] == 1.0 and r["recall_vs_flat"] == 1.0
        else:
            assert r["recall_vs_flat"] >= 0.95
    assert all(r["planted_recall"] == 1.0 for r in result["banding_rows"])  # pigeonhole


def test_pairs_and_banding_candidates_match_brute_force(result):
    c = cfg()
    flat = {(r["kind"], r["n"]): r for r in result["index_rows"] if r["index"] == "flat"}
    band = {r["n"]: r for r in result["banding_rows"]}
    for n in (2000, 10000):
        case = dedup_bench.make_case("binary", n, c)
        want = int((per_image_min(hamming(case.queries, case.x), case.owner) <= THRESHOLD).sum())
        assert want > 50 and flat[("binary", n)]["pairs"] == want and band[n]["pairs"] == want
        assert band[n]["candidates"] == naive_band_candidates(case.x, case.queries)
    case = dedup_bench.make_case("float", 2000, c)
    want = int((per_image_min(1.0 - case.queries @ case.x.T, case.owner) <= FLOAT_THRESHOLD).sum())
    assert want > 50 and flat[("float", 2000)]["pairs"] == want


def test_planted_queries_sit_where_the_docstring_says():
    c = cfg()
    b = dedup_bench.make_case("binary", 2000, c)
    planted = b.source >= 0
    assert planted.sum() == 100 and (b.level[planted] == np.arange(100) % (THRESHOLD + 3)).all()
    d = np.bitwise_count(b.queries[planted] ^ b.x[b.source[planted]])
    assert d.tolist() == b.level[planted].tolist()
    f = dedup_bench.make_case("float", 2000, c)
    cos = (f.queries[:100] * f.x[f.source[:100]]).sum(1)
    np.testing.assert_allclose(1 - cos, FLOAT_THRESHOLD * f.level[:100] / (THRESHOLD + 0.5), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f.x, axis=1), 1, atol=1e-5)
    # clustered: variants of one image (50 rows) about 11 bits apart on average, of different images 31.5
    same, other = hamming(b.x[:50], b.x[:50]), hamming(b.x[:50], b.x[50:100])
    assert same[np.triu_indices(50, 1)].mean() < 15 and other.mean() > 28


def test_job_search_returns_each_query_its_nearest_images(result):
    c = cfg()
    case = dedup_bench.make_case("binary", 10000, c)
    q = dedup_bench.job_descriptors(case, 3000, c)
    d = hamming(q, case.x)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :SEARCH_K]
    want = sum(min(PROBE, len(set(case.owner[row].tolist()))) for row in nearest)
    job = result["job_rows"][0]
    assert job["index_n"] == 10000 and job["cores"] == 2
    assert abs(job["nearest"] - want) <= 0.01 * want, (job["nearest"], want)  # HNSW: approximate


def test_banding_costs_more_than_hnsw_at_a_billion(result):
    est = result["estimate"]
    assert est["target_variants"] == 50_000 * 50
    assert est["banding"]["core_hours"] > 10 * est["hnsw_binary"]["core_hours"]


def test_bad_config_names_the_flag():
    with pytest.raises(ValueError, match="--queries must be an even number >= 10, got 7"):
        dedup_bench.DedupBenchConfig(queries=7)
    with pytest.raises(ValueError, match="--float-sizes must be positive integers"):
        dedup_bench.DedupBenchConfig(float_sizes=("0",))
