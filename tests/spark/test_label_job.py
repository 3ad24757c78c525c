"""jobs/label.py on a real local[2] SparkSession, against plain-Python computations."""
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats as st

import schemas
from jobs.label import LabelConfig, run as label
from jobs.vocab import VocabConfig, run as vocab
from pipeline.normalize import normalize
from tests.helpers.jobkit import ROWS, write_manifest

CORPUS = Path("/usr/share/openclipart")


def expected_labels(manifest_rows, vocab_dir: Path, threshold: int):
    """Plain Python: labels, importance and tail of every image."""
    hmap = {r["hashtag"]: r["label"] for r in pq.read_table(vocab_dir / "hashtag_map.parquet").to_pylist()}
    f = {r["label"]: r["images"] for r in pq.read_table(vocab_dir / "vocab.parquet").to_pylist()}
    out = {}
    for r in manifest_rows:
        labels = sorted({hmap[n] for n in (normalize(t) for t in r["hashtags"] or []) if n in hmap})
        if labels:
            out[r["image_id"]] = (labels, max(f[lb] ** -0.5 for lb in labels), min(f[lb] for lb in labels) < threshold)
    return out


def read_labeled(out: Path):
    t = pq.read_table(out / "labeled.parquet")
    schemas.check_schema(t.schema, schemas.LABELED, "labeled.parquet")
    return {r["image_id"]: r for r in t.to_pylist()}, json.loads((out / "stats.json").read_text())


def test_labels_importance_tail_on_toy(spark, tmp_path):
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab"), min_count=1))
    stats = label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "vocab"), out=str(tmp_path / "lab"),
                                     tail_threshold=4))
    got, _ = read_labeled(tmp_path / "lab")
    exp = expected_labels(pq.read_table(m).to_pylist(), tmp_path / "vocab", 4)
    assert {k: (v["labels"], pytest.approx(v["importance"]), v["tail"]) for k, v in got.items()} == exp
    # f: dog 5, eggplant 4, brownbear 3, ice_cream 3 -> f's image only has ice_cream(3) -> tail
    assert got["f"]["labels"] == [3] and got["f"]["tail"] and got["f"]["importance"] == pytest.approx(3 ** -0.5)
    assert got["a"]["image"] == "img/a.jpg"  # pass-through
    assert stats["tail_images"] + stats["head_images"] == stats["rows_kept"] == 6


@pytest.mark.skipif(not (CORPUS / "png").is_dir(), reason="openclipart not installed")
def test_openclipart_importance_and_tail_match_plain_python(spark, tmp_path):
    from jobs.ingest_openclipart import main as ingest

    ingest(["--root", str(CORPUS), "--out", str(tmp_path / "m")])
    m = str(tmp_path / "m" / "manifest.parquet")
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab")))
    stats = label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "vocab"), out=str(tmp_path / "lab"),
                                     tail_threshold=100))
    got, _ = read_labeled(tmp_path / "lab")
    exp = expected_labels(pq.read_table(m).to_pylist(), tmp_path / "vocab", 100)
    assert set(got) == set(exp)
    for k, (labels, imp, tail) in exp.items():
        assert got[k]["labels"] == labels and got[k]["tail"] == tail
        assert got[k]["importance"] == pytest.approx(imp, rel=1e-12)
    assert got[next(iter(got))]["category"]  # openclipart's category passes through
    assert stats["rows_dropped"]["no_label"] == stats["rows_read"] - stats["rows_dropped"]["no_hashtags"] - len(exp)


def test_label_noise_is_seeded_and_has_the_right_rate(spark, tmp_path):
    rng = np.random.default_rng(0)
    tags = [f"tag{i}" for i in range(6)]
    rows = {f"i{k}": list(rng.choice(tags, size=2, replace=False)) for k in range(1500)}
    nouns = ["dog", "cat", "apple", "car", "boat", "tree"]
    rows = {k: [nouns[int(t[3:])] for t in v] for k, v in rows.items()}
    m = write_manifest(tmp_path / "m.parquet", rows)
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab")))
    clean, _ = read_labeled_after(spark, tmp_path, m, 0.0, 0, "clean")
    noisy1, _ = read_labeled_after(spark, tmp_path, m, 0.4, 1, "n1")
    noisy1b, _ = read_labeled_after(spark, tmp_path, m, 0.4, 1, "n1b")
    noisy2, _ = read_labeled_after(spark, tmp_path, m, 0.4, 2, "n2")
    assert {k: v["labels"] for k, v in noisy1.items()} == {k: v["labels"] for k, v in noisy1b.items()}
    assert {k: v["labels"] for k, v in noisy1.items()} != {k: v["labels"] for k, v in noisy2.items()}
    # a clean image has 2 distinct labels; a label survives with probability 1 - 0.4 = 0.6
    kept = sum(len(set(noisy1[k]["labels"]) & set(v["labels"])) for k, v in clean.items())
    total = sum(len(v["labels"]) for v in clean.values())
    # a replacement can land on the image's other label (then the occurrence merges), so survivors
    # are at least the untouched ones: check the untouched rate with a one-sided binomial bound
    assert st.binomtest(kept, total, 0.6, alternative="less").pvalue > 0.001
    assert kept < total * 0.9  # noise really happened


def read_labeled_after(spark, tmp_path, m, p, seed, name):
    label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "vocab"), out=str(tmp_path / name),
                             tail_threshold=10, label_noise=p, seed=seed))
    return read_labeled(tmp_path / name)


def test_vocabulary_that_does_not_match_is_a_clear_error(spark, tmp_path):
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab"), min_count=1))
    other = write_manifest(tmp_path / "other.parquet", {"x": ["airplane"], "y": ["bicycle"]})
    with pytest.raises(ValueError, match=r"no image of .*other\.parquet carries a hashtag of the vocabulary"):
        label(spark, LabelConfig(manifest=other, vocab=str(tmp_path / "vocab"), out=str(tmp_path / "o")))
    with pytest.raises(ValueError, match=r"nowhere/vocab\.parquet: cannot read"):
        label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "nowhere"), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_manifest_other_than_the_vocabularys_is_refused(spark, tmp_path):
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab"), min_count=1))
    fewer = write_manifest(tmp_path / "fewer.parquet", {k: v for k, v in ROWS.items() if k != "a"})
    with pytest.raises(ValueError, match=r"fewer\.parquet is not the manifest the vocabulary .*vocab was built from: "
                                         r"5 images kept here, 6 in .*image_hashtags\.parquet, 1 of its labelled"):
        label(spark, LabelConfig(manifest=fewer, vocab=str(tmp_path / "vocab"), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_repeated_ids_the_vocabulary_saw_or_did_not(spark, tmp_path):
    """The label job looks for repeated ids only when the vocabulary dropped some from its manifest;
    one it did not see (another manifest) is caught by the kept rows' count and id checksum."""
    lines = ['{"image_id": "a", "image": "a.jpg", "hashtags": ["dog"]}',
             '{"image_id": "b", "image": "b.jpg", "hashtags": ["dog", "cat"]}',
             '{"image_id": "c", "image": "c.jpg", "hashtags": ["cat"]}']
    with_repeat = tmp_path / "repeat.jsonl"
    with_repeat.write_text("\n".join([*lines, '{"image_id": "b", "image": "b2.jpg", "hashtags": ["cat"]}']) + "\n")
    vocab(spark, VocabConfig(manifest=str(with_repeat), out=str(tmp_path / "v1"), min_count=1))
    label(spark, LabelConfig(manifest=str(with_repeat), vocab=str(tmp_path / "v1"), out=str(tmp_path / "o1")))
    rows, stats = read_labeled(tmp_path / "o1")
    assert sorted(rows) == ["a", "b", "c"] and stats["rows_dropped"]["duplicate_image_id"] == 1
    unique = tmp_path / "unique.jsonl"
    unique.write_text("\n".join(lines) + "\n")
    vocab(spark, VocabConfig(manifest=str(unique), out=str(tmp_path / "v2"), min_count=1))
    with pytest.raises(ValueError, match=r"repeat\.jsonl is not the manifest the vocabulary .*v2 was built from: "
                                         r"4 images kept here, 3 in"):
        label(spark, LabelConfig(manifest=str(with_repeat), vocab=str(tmp_path / "v2"), out=str(tmp_path / "o2")))
    assert not (tmp_path / "o2").exists()
