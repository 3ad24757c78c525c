"""pipeline.synthetic: the tag universe against real WordNet, and the manifest writer's
distributions, determinism and bounded memory (statistical tests with fixed seeds)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats

from pipeline import synthetic
from pipeline.wordnet import DEFAULT_LEXNAMES, get_synsets
from schemas import MANIFEST, check_schema
from tests.helpers import ROOT

N_TAGS = 20_000


@pytest.fixture(scope="module")
def pools(wn):
    return synthetic.lemma_pools(wn)


@pytest.fixture(scope="module")
def ranked(pools):
    return synthetic.ranked_universe(pools, N_TAGS, seed=0)


@pytest.fixture(scope="module")
def tags(ranked):
    return [t for t, _ in ranked]


def _by_kind(ranked):
    out = {}
    for t, k in ranked:
        out.setdefault(k, []).append(t)
    return out


def _sample(xs, n, seed):
    rng = np.random.default_rng(seed)
    return [xs[i] for i in rng.choice(len(xs), size=min(n, len(xs)), replace=False)]


# --- the universe ---------------------------------------------------------------------------

def test_universe_is_seeded_distinct_and_interleaved(pools, ranked):
    assert len(ranked) == N_TAGS
    assert len({t for t, _ in ranked}) == N_TAGS
    assert synthetic.ranked_universe(pools, N_TAGS, seed=0) == ranked
    other = synthetic.ranked_universe(pools, N_TAGS, seed=1)
    assert [t for t, _ in other] != [t for t, _ in ranked]
    kinds = {k: len(v) for k, v in _by_kind(ranked).items()}
    rest = N_TAGS - len(synthetic.COMMON_TAGS)
    assert kinds["common"] == len(synthetic.COMMON_TAGS)
    for kind, share in synthetic.KIND_SHARES.items():
        assert abs(kinds[kind] - share * rest) <= 1, kind
    # The head mixes kinds: common tags every COMMON_STRIDE ranks, the others in between.
    head = [k for _, k in ranked[:30]]
    assert head[::synthetic.COMMON_STRIDE] == ["common"] * 10
    assert {"wordnet", "misspelling", "other", "place"} <= set(head)


@pytest.mark.parametrize("lemma", ["brown_bear", "dog", "pizza", "guitar", "oak", "ice_cream", "sailboat"])
def test_canonical_wordnet_lemmas_are_in_the_pool(wn, pools, lemma):
    # independently: the lemma names a noun synset in SWAG's lexnames
    assert any(s.lexname() in DEFAULT_LEXNAMES for s in wn.synsets(lemma, "n"))
    assert lemma.replace("_", "") in pools.wordnet


def test_wordnet_tags_are_real_lemmas_and_canonicalize(wn, ranked):
    kinds = _by_kind(ranked)
    assert {"brownbear", "dog", "pizza"} & set(kinds["wordnet"])
    sample = _sample(kinds["wordnet"], 300, seed=1)
    canonical = [t for t in sample if get_synsets(t, wn)]
    assert len(canonical) >= 0.97 * len(sample), sorted(set(sample) - set(canonical))[:20]
    # Overall most of the universe canonicalizes, but not all of it.
    overall = _sample([t for t, _ in ranked], 400, seed=2)
    share = np.mean([bool(get_synsets(t, wn)) for t in overall])
    assert 0.6 <= share <= 0.85


def test_non_wordnet_tags(wn, ranked):
    kinds = _by_kind(ranked)
    for t in ("nofilter", "instagood", "photooftheday", "tbt"):
        assert t in kinds["common"]
        assert wn.synsets(t) == []
    # Places: some split of the tag names a noun.location synset (`newyork` -> new_york).
    for t in _sample(kinds["place"], 50, seed=3):
        cands = [t] + [t[:i] + "_" + t[i:] for i in range(1, len(t))]
        assert any(s.lexname() == "noun.location" for c in cands for s in wn.synsets(c, "n")), t
    # Misspellings: one drop / adjacent swap / doubling away from a chosen lemma, and no lemma.
    edits = set()
    for w in kinds["wordnet"]:
        for i in range(len(w)):
            edits.add(w[:i] + w[i + 1:])
            edits.add(w[:i] + w[i] + w[i:])
            edits.add(w[:i] + w[i + 1:i + 2] + w[i:i + 1] + w[i + 2:])
    lemmas = {n.replace("_", "").lower() for n in wn.all_lemma_names("n")}
    for m in kinds["misspelling"]:
        assert m in edits and m not in lemmas, m


def test_universe_too_large_is_a_clear_error(pools):
    with pytest.raises(ValueError, match="n_tags <="):
        synthetic.ranked_universe(pools, 500_000, seed=0)


# --- the manifest ---------------------------------------------------------------------------

def test_write_read_back(tmp_path, tags):
    out = tmp_path / "m.parquet"
    side = synthetic.write_manifest(out, 12_345, tags, seed=0, batch_size=1000)
    check_schema(pq.read_schema(out), MANIFEST, str(out))
    assert pq.read_schema(out).field("image_id").nullable is False
    t = pq.read_table(out)
    f = pq.ParquetFile(out)
    assert (t.num_rows, f.metadata.num_row_groups) == (12_345, 13)
    for k in (0, 999, 1000, 12_344):
        assert t["image_id"][k].as_py() == "syn%010d" % k
        assert t["image"][k].as_py() == "syn/%010d.jpg" % k
    flat = pc.list_flatten(t["hashtags"]).to_pylist()
    assert side["hashtags_total"] == len(flat) and set(flat) <= set(tags)
    assert json.loads((tmp_path / "m.parquet.json").read_text()) == side
    assert not list(tmp_path.glob("*.tmp"))


def test_same_seed_same_bytes(tmp_path, tags):
    paths = [tmp_path / n for n in ("a.parquet", "b.parquet", "c.parquet")]
    for p, seed in zip(paths, (7, 7, 8)):
        synthetic.write_manifest(p, 30_000, tags, seed=seed, batch_size=4096)
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c
    assert Path(f"{paths[0]}.json").read_bytes() == Path(f"{paths[1]}.json").read_bytes()


def test_tags_per_image_is_truncated_geometric(tmp_path, tags):
    out = tmp_path / "m.parquet"
    side = synthetic.write_manifest(out, 100_000, tags, seed=11)
    lengths = pc.list_value_length(pq.read_table(out)["hashtags"]).to_numpy()
    assert lengths.min() >= 1 and lengths.max() <= 10
    observed = np.bincount(lengths, minlength=11)[1:]
    assert observed.tolist() == side["tags_per_image"]
    q = 0.8 ** np.arange(10)
    expected = q / q.sum() * len(lengths)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # and it is not uniform on 1..10
    assert stats.chisquare(observed, np.full(10, len(lengths) / 10)).pvalue < 1e-12


@pytest.mark.parametrize("s", [0.8, 1.1, 1.4])
def test_tag_frequencies_follow_zipf(tmp_path, tags, s):
    out = tmp_path / "m.parquet"
    synthetic.write_manifest(out, 200_000, tags, seed=3, zipf_s=s)
    vc = pc.value_counts(pc.list_flatten(pq.read_table(out)["hashtags"]))
    count = dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))
    freq = np.array([count.get(t, 0) for t in tags], dtype=np.float64)
    ranks = np.arange(1, 101)
    slope = np.polyfit(np.log(ranks), np.log(freq[:100]), 1)[0]
    assert abs(slope + s) < 0.02, slope
    # chi-square on the top 50 ranks plus one bucket for the rest, against r^-s / H
    p = np.arange(1, len(tags) + 1, dtype=np.float64) ** -s
    p /= p.sum()
    exp = np.append(p[:50], p[50:].sum()) * freq.sum()
    obs = np.append(freq[:50], freq[50:].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3


_CHILD = """
import resource, sys
from pipeline.synthetic import write_manifest
write_manifest(sys.argv[1], int(sys.argv[2]), [f"tag{i}" for i in range(20000)], batch_size=50_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_streaming_bounds_memory(tmp_path):
    """Peak RSS of a 2M-image write stays within a few MB of a 200k-image one: rows are
    streamed in row groups (holding the table would add well over 100 MB)."""
    peak = {}
    for n in (200_000, 2_000_000):
        out = tmp_path / f"m{n}.parquet"
        r = subprocess.run([sys.executable, "-c", _CHILD, str(out), str(n)], cwd=ROOT,
                           capture_output=True, text=True, check=True)
        peak[n] = int(r.stdout.split()[-1]) / 1024  # ru_maxrss is KiB on Linux
    meta = pq.ParquetFile(tmp_path / "m2000000.parquet").metadata
    assert (meta.num_rows, meta.num_row_groups) == (2_000_000, 40)
    assert peak[2_000_000] - peak[200_000] < 64, peak


# --- the entry point ------------------------------------------------------------------------

def test_main_matches_library_and_validates(tmp_path, pools):
    out = tmp_path / "cli" / "m.parquet"
    assert synthetic.main(["images=5000", f"out={out}", "seed=5", "tags=3000",
                           "zipf=1.2", "batch_size=2048"]) == 0
    side = json.loads(Path(f"{out}.json").read_text())
    assert side["params"] == {"n_images": 5000, "seed": 5, "zipf_s": 1.2, "n_tags": 3000, "batch_size": 2048,
                              "max_tags": 10, "tags_per_image_decay": 0.8}
    assert sum(side["meta"]["universe_kinds"].values()) == 3000
    # The same universe built from separately computed pools gives the same bytes.
    tags = [t for t, _ in synthetic.ranked_universe(pools, 3000, seed=5)]
    again = tmp_path / "lib.parquet"
    synthetic.write_manifest(again, 5000, tags, seed=5, zipf_s=1.2, batch_size=2048)
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("override, match", [
    ({"images": 0}, "n_images"), ({"zipf": -1.0}, "zipf"), ({"zipf": float("nan")}, "zipf"),
    ({"tags": 0}, "n_tags"), ({"batch_size": 0}, "batch_size"), ({"out": ""}, "out"),
])
def test_config_rejects_bad_values(override, match):
    kw = {"images": 10, "out": "x.parquet", **override}
    with pytest.raises(ValueError, match=match):
        synthetic.SyntheticConfig(**kw)
