"""pipeline/synthetic_corpus.py: img2dataset's webdataset layout, readable members, statuses,
byte-identical reruns and shards, and the Zipf law of the caption hashtags."""
from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import synthetic_corpus as SC
from pipeline.images import decode_rgb

TAGS = [f"tag{i}" for i in range(300)]
PARAMS = SC.CorpusParams(images=250, seed=3, shard_size=100, failed=0.1, side=64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    totals = SC.write_corpus(out, PARAMS, TAGS)
    return out, totals


def files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_layout_names_and_keys(corpus):
    out, totals = corpus
    assert sorted(files(out)) == [f"{s:05d}{ext}" for s in range(3) for ext in (".parquet", ".tar", "_stats.json")]
    assert totals["count"] == 250
    keys = [r["key"] for s in range(3) for r in pq.read_table(out / f"{s:05d}.parquet").to_pylist()]
    # img2dataset's compute_key: shard * 10^ceil(log10(shard_size)) + index in the shard, 9 digits
    assert keys[:2] == ["000000000", "000000001"] and keys[112] == "000000112" and keys[-1] == "000000249"
    assert SC.corpus_key(SC.CorpusParams(images=5000), 1012) == "000001012"
    assert SC.corpus_key(SC.CorpusParams(images=5000, shard_size=150), 162) == "000001012"
    assert all(len(k) == 9 and k.isdigit() for k in keys) and len(set(keys)) == 250


def test_members_decode_and_agree_with_the_parquet(corpus):
    out, _ = corpus
    for s in range(3):
        rows = {r["key"]: r for r in pq.read_table(out / f"{s:05d}.parquet").to_pylist()}
        ok = {k for k, r in rows.items() if r["status"] == "success"}
        with tarfile.open(out / f"{s:05d}.tar") as tar:
            names = tar.getnames()
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        # each success: .jpg, .txt, .json in that order; failed rows are only in the Parquet
        assert names == [f"{k}.{ext}" for k in sorted(ok) for ext in ("jpg", "txt", "json")]
        for k in ok:
            jpg = members[f"{k}.jpg"]
            img = decode_rgb(jpg, source=k)
            assert img.size == (64, 64) and img.mode == "RGB"
            assert 1000 < len(jpg) < 12000
            meta = json.loads(members[f"{k}.json"])
            assert set(meta) == {"key", "status", "caption", "url", "width", "height", "original_width",
                                 "original_height", "sha256", "error_message", "uid"}
            assert meta["sha256"] == hashlib.sha256(jpg).hexdigest() == rows[k]["sha256"]
            assert members[f"{k}.txt"].decode() == meta["caption"] == rows[k]["caption"]
            assert (meta["key"], meta["status"], meta["width"], meta["error_message"]) == (k, "success", 64, None)


def test_parquet_rows_are_successes_plus_failures(corpus):
    out, totals = corpus
    all_rows = [r for s in range(3) for r in pq.read_table(out / f"{s:05d}.parquet").to_pylist()]
    assert pq.read_schema(out / "00000.parquet").names == SC.CORPUS_PARQUET.names
    status = Counter(r["status"] for r in all_rows)
    assert set(status) <= set(SC.STATUSES) and status["failed_to_download"] > 0
    assert sum(status.values()) == 250
    stats = [json.loads((out / f"{s:05d}_stats.json").read_text()) for s in range(3)]
    assert [st["count"] for st in stats] == [100, 100, 50]
    assert sum(st["successes"] for st in stats) == status["success"] == totals["successes"]
    assert sum(st["failed_to_download"] for st in stats) == status["failed_to_download"]
    assert sum(st["failed_to_resize"] for st in stats) == status["failed_to_resize"]
    for r in all_rows:
        if r["status"] == "success":
            assert r["error_message"] is None and r["sha256"]
        else:
            assert r["error_message"] and r["sha256"] is None and r["width"] is None
    # 25 failures expected (10% of 250); a fixed seed gives one count, within binomial range
    assert 10 <= 250 - status["success"] <= 45


def test_images_are_distinct(corpus):
    out, _ = corpus
    sha = [r["sha256"] for r in pq.read_table(out / "00000.parquet").to_pylist() if r["sha256"]]
    assert len(set(sha)) == len(sha)


def test_same_seed_same_bytes_and_one_shard_alone(corpus, tmp_path):
    out, _ = corpus
    SC.write_corpus(tmp_path / "again", PARAMS, TAGS, workers=2)
    assert files(tmp_path / "again") == files(out)
    SC.write_corpus(tmp_path / "one", PARAMS, TAGS, shards=[1])
    assert files(tmp_path / "one") == {k: v for k, v in files(out).items() if k.startswith("00001")}
    other = SC.CorpusParams(**{**PARAMS.__dict__, "seed": 4})
    SC.write_corpus(tmp_path / "other", other, TAGS, shards=[0])
    assert (tmp_path / "other" / "00000.tar").read_bytes() != (out / "00000.tar").read_bytes()


def test_rerun_skips_finished_shards(corpus, tmp_path):
    SC.write_corpus(tmp_path, PARAMS, TAGS, shards=[2])
    tar = tmp_path / "00002.tar"
    tar.write_bytes(b"kept")  # a finished shard (its stats exist) is not rewritten
    SC.write_corpus(tmp_path, PARAMS, TAGS, shards=[2])
    assert tar.read_bytes() == b"kept"
    assert not SC.corpus_complete(tmp_path, PARAMS) and SC.corpus_complete(corpus[0], PARAMS)


def log_log_slope(params: SC.CorpusParams, tags: list[str]) -> float:
    """Least-squares slope of log(count) on log(rank) over the 50 most frequent caption hashtags
    (ranks by observed frequency, as one would measure a real corpus)."""
    sampler = SC.Sampler.build(tags, params.zipf)
    counts = Counter()
    for i in range(params.images):
        counts.update(re.findall(r"#(\w+)", SC.draw_row(params, sampler, i, image=False)["caption"]))
    top = np.array(sorted(counts.values(), reverse=True)[:50], dtype=np.float64)
    return float(np.polyfit(np.log(np.arange(1, 51)), np.log(top), 1)[0])


@pytest.mark.parametrize("zipf", [1.1, 0.8])
def test_caption_hashtags_follow_the_zipf_exponent(zipf):
    """40k rows draw ~150k hashtags (mean ~3.8 per image) over 2,000 tags. With s = 1.1 the
    50th tag's expected count is ~150k * 50^-1.1 / H (H ~ 5.9) ~ 340, so every one of the 50
    log-counts has a standard deviation <= 1/sqrt(340) ~ 0.055; the log ranks 1..50 have
    sum((x - mean)^2) ~ 42, so the fitted slope's standard error is <= 0.055 / sqrt(42) ~ 0.009
    (s = 0.8: counts are larger, the error smaller). Ranking by observed counts biases the head
    by less than that. 0.05 is over 5 standard errors: a correct sampler passes for any seed, and
    one with another exponent (0.8 vs 1.1 is 0.3 away) cannot."""
    params = SC.CorpusParams(images=40_000, seed=0, zipf=zipf)
    slope = log_log_slope(params, [f"t{i}" for i in range(2000)])
    assert abs(-slope - zipf) < 0.05, (slope, zipf)


def test_caption_carries_its_hashtags_after_a_template():
    sampler = SC.Sampler.build(["dog", "newyork", "icecream"], 1.1)
    row = SC.draw_row(SC.CorpusParams(images=10, failed=0.0), sampler, 7)
    tags = re.findall(r"#(\w+)", row["caption"])
    assert tags and set(tags) <= {"dog", "newyork", "icecream"}
    assert any(row["caption"].startswith(t.format(tags[0])) for t in SC.TEMPLATES)
    assert decode_rgb(row["jpg"]).size == (96, 96)


def test_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(SC, "corpus_tags", lambda n, seed, wordnet=None: TAGS[:n])
    assert SC.main([f"out={tmp_path}", "images=30", "shard_size=20", "tags=50", "workers=2"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["00000.tar", "00001.tar"]
    assert "30 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        SC.main(["images=3"])  # out is required
    assert e.value.code == 2
    with pytest.raises(ValueError, match="side"):
        SC.main([f"out={tmp_path}", "images=3", "side=4"])


def test_jpeg_size_at_side_96():
    """The default side gives JPEGs of a few KB, as img2dataset's small resized photos are (no
    timing assertion: shared CI cores; the rehearsal measures images/s)."""
    sampler = SC.Sampler.build(TAGS, 1.1)
    params = SC.CorpusParams(images=200, failed=0.0)
    sizes = [len(SC.draw_row(params, sampler, i)["jpg"]) for i in range(200)]
    assert 3000 <= np.median(sizes) <= 8000, np.percentile(sizes, [5, 50, 95])
