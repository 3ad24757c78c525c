"""The vocabulary job end to end on a real local[2] SparkSession and real WordNet."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

import schemas
from jobs.lib.manifest import ManifestError, read_manifest
from jobs.vocab import VocabConfig, run
from tests.helpers.jobkit import ROWS, write_manifest

def read_out(out: Path):
    vocab = pq.read_table(out / "vocab.parquet")
    schemas.check_schema(vocab.schema, schemas.VOCAB, "vocab.parquet")
    hmap = pq.read_table(out / "hashtag_map.parquet")
    schemas.check_schema(hmap.schema, schemas.HASHTAG_MAP, "hashtag_map.parquet")
    stats = json.loads((out / "stats.json").read_text())
    return vocab.to_pylist(), {r["hashtag"]: r["label"] for r in hmap.to_pylist()}, stats


def test_min_count_1_merges_the_paper_cases(spark, tmp_path):
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    run(spark, VocabConfig(manifest=m, out=str(tmp_path / "out"), min_count=1))
    vocab, hmap, stats = read_out(tmp_path / "out")
    got = [(v["label"], v["name"], sorted(v["hashtags"]), v["images"]) for v in vocab]
    assert got == [
        (0, "dog", ["dog"], 5),
        (1, "eggplant", ["aubergine", "eggplant"], 4),       # images a, b, c, e
        (2, "brownbear", ["brownbear", "ursus_arctos"], 3),  # tie with ice_cream: key order
        (3, "ice_cream", ["ice_cream", "icecream"], 3),      # d, e, f
    ]
    assert vocab[2]["key"] == "brown_bear.n.01" and vocab[2]["synsets"] == ["brown_bear.n.01"]
    assert hmap == {"dog": 0, "eggplant": 1, "aubergine": 1, "brownbear": 2, "ursus_arctos": 2,
                    "ice_cream": 3, "icecream": 3}
    # 9 distinct normalized hashtags, each looked up exactly once
    assert stats["distinct_hashtags"] == 9 and stats["get_synsets_calls"] == 9
    assert stats["hashtags_dropped"]["no_synsets"] == 2  # newyork, zzzz
    assert stats["hashtags_kept"] == 7 and stats["vocab_size"] == 4
    assert stats["rows_read"] == 6 and stats["rows_kept"] == 6


def test_image_hashtags_are_written_once_per_kept_image(spark, tmp_path):
    rows = {**ROWS, "g": ["###", "--"], "h": ["Dog", "#dog", "DOG", "Ice Cream"]}
    m = write_manifest(tmp_path / "m.parquet", rows)
    run(spark, VocabConfig(manifest=m, out=str(tmp_path / "out"), min_count=1))
    t = pq.read_table(tmp_path / "out" / "image_hashtags.parquet")
    schemas.check_schema(t.schema, schemas.IMAGE_HASHTAGS, "image_hashtags.parquet")
    assert {r["image_id"]: r["hashtags"] for r in t.to_pylist()} == {  # normalized by hand
        "a": ["brownbear", "dog", "eggplant", "newyork"], "b": ["aubergine", "brownbear", "dog"],
        "c": ["dog", "eggplant", "ursus_arctos"], "d": ["dog", "icecream", "newyork"],
        "e": ["dog", "eggplant", "ice_cream"], "f": ["ice_cream", "zzzz"],
        "g": [],  # kept by the manifest's rules, nothing survives normalization
        "h": ["dog", "ice_cream"]}


def test_min_count_2_is_used_more_than_once(spark, tmp_path):
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    run(spark, VocabConfig(manifest=m, out=str(tmp_path / "out")))
    vocab, hmap, stats = read_out(tmp_path / "out")
    assert [(v["name"], v["images"]) for v in vocab] == [
        ("dog", 5), ("eggplant", 3), ("brownbear", 2), ("ice_cream", 2)]
    assert "aubergine" not in hmap and "icecream" not in hmap
    assert stats["hashtags_dropped"]["below_min_count"] == 4  # aubergine, ursus_arctos, icecream, zzzz
    assert stats["get_synsets_calls"] == 5


def test_max_labels_and_align_synsets(spark, tmp_path, wn):
    m = write_manifest(tmp_path / "m.parquet", ROWS)
    run(spark, VocabConfig(manifest=m, out=str(tmp_path / "top2"), min_count=1, max_labels=2))
    vocab, hmap, stats = read_out(tmp_path / "top2")
    assert [v["name"] for v in vocab] == ["dog", "eggplant"]
    assert stats["hashtags_dropped"]["beyond_max_labels"] == 4
    align = tmp_path / "align.txt"
    align.write_text(f"n{wn.synset('brown_bear.n.01').offset():08d}\nice_cream.n.01\n")
    run(spark, VocabConfig(manifest=m, out=str(tmp_path / "aligned"), min_count=1, align_synsets=str(align)))
    vocab, hmap, _ = read_out(tmp_path / "aligned")
    assert [(v["label"], v["name"]) for v in vocab] == [(0, "brownbear"), (1, "ice_cream")]


def test_bad_rows_are_counted_not_lost(spark, tmp_path):
    lines = [
        '{"image_id": "a", "image": "a.jpg", "hashtags": ["dog", "eggplant"]}',
        '{"image_id": "b", "image": "b.jpg", "caption": "my #dog eats #eggplant"}',
        '{"image_id": "c", "image": "c.jpg", "hashtags": ["dog"], "extra": 7',   # malformed
        'not json at all',                                                       # malformed
        '{"image_id": "d", "image": "d.jpg", "hashtags": null}',                 # no hashtags
        '{"image_id": "e", "image": "e.jpg", "hashtags": []}',                   # no hashtags
        '{"image_id": "a", "image": "a2.jpg", "hashtags": ["cat", "dog"]}',      # duplicate id
        '{"image": "x.jpg", "hashtags": ["dog"]}',                               # no image_id
        '{"image_id": "g", "hashtags": ["dog"]}',                                # no image
        '{"image_id": "h", "image": "h.jpg", "hashtags": "dog"}',                # wrong type
        '{"image_id": "i", "image": "i.jpg", "hashtags": ["dog", "eggplant"], "extra": 1}',
    ]
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(lines) + "\n")
    stats = run(spark, VocabConfig(manifest=str(m), out=str(tmp_path / "out"), min_count=1))
    assert stats["rows_read"] == 11
    assert stats["rows_dropped"] == {"malformed_json": 3, "missing_image_id": 1, "missing_image": 1,
                                     "no_hashtags": 2, "duplicate_image_id": 1}
    assert stats["rows_kept"] == 3
    vocab, _, _ = read_out(tmp_path / "out")
    # a (one of its two rows), b (caption) and i carry dog; cat only if a's second row was kept
    dog = next(v for v in vocab if v["name"] == "dog")
    assert dog["images"] == 3


def test_duplicate_choice_does_not_depend_on_order(spark, tmp_path):
    rows = [("x", "x1.jpg", ["dog"]), ("x", "x2.jpg", ["cat"]), ("y", "y.jpg", ["dog", "cat"])]
    results = []
    for name, order in (("fwd", rows), ("rev", rows[::-1])):
        t = pa.table({"image_id": [r[0] for r in order], "image": [r[1] for r in order],
                      "hashtags": [r[2] for r in order]}, schema=schemas.MANIFEST)
        pq.write_table(t, tmp_path / f"{name}.parquet")
        run(spark, VocabConfig(manifest=str(tmp_path / f"{name}.parquet"), out=str(tmp_path / name), min_count=1))
        vocab, _, stats = read_out(tmp_path / name)
        assert stats["rows_dropped"]["duplicate_image_id"] == 1
        results.append(sorted((v["name"], v["images"]) for v in vocab))
    assert results[0] == results[1]


def test_missing_column_and_unreadable_file_name_the_cause(spark, tmp_path):
    t = pa.table({"id": ["a"], "image": ["a.jpg"], "hashtags": [["dog"]]})
    pq.write_table(t, tmp_path / "noid.parquet")
    with pytest.raises(ManifestError, match=r"noid\.parquet.*'image_id'"):
        run(spark, VocabConfig(manifest=str(tmp_path / "noid.parquet"), out=str(tmp_path / "o1")))
    t = pa.table({"image_id": ["a"], "image": ["a.jpg"]})
    pq.write_table(t, tmp_path / "notags.parquet")
    with pytest.raises(ManifestError, match=r"notags\.parquet.*'hashtags'.*'caption'"):
        run(spark, VocabConfig(manifest=str(tmp_path / "notags.parquet"), out=str(tmp_path / "o2")))
    t = pa.table({"image_id": [1], "image": ["a.jpg"], "hashtags": [["dog"]]})
    pq.write_table(t, tmp_path / "intid.parquet")
    with pytest.raises(ManifestError, match=r"intid\.parquet: column 'image_id' is bigint"):
        run(spark, VocabConfig(manifest=str(tmp_path / "intid.parquet"), out=str(tmp_path / "o3")))
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet" * 10)
    with pytest.raises(ManifestError, match=r"junk\.parquet: cannot read"):
        run(spark, VocabConfig(manifest=str(tmp_path / "junk.parquet"), out=str(tmp_path / "o4")))
    with pytest.raises(ManifestError, match=r"absent\.parquet"):
        run(spark, VocabConfig(manifest=str(tmp_path / "absent.parquet"), out=str(tmp_path / "o5")))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_rerun_replaces_output_and_failure_keeps_previous(spark, tmp_path):
    from jobs.lib.output import atomic_output

    m = write_manifest(tmp_path / "m.parquet", ROWS)
    out = tmp_path / "out"
    run(spark, VocabConfig(manifest=m, out=str(out), min_count=1))
    run(spark, VocabConfig(manifest=m, out=str(out), min_count=2))  # replaces cleanly
    _, _, stats = read_out(out)
    assert stats["config"]["min_count"] == 2
    with pytest.raises(RuntimeError):
        with atomic_output(spark, str(out)) as tmp:
            spark.range(3).write.parquet(f"{tmp}/vocab.parquet")
            raise RuntimeError("killed half-way")
    _, _, stats = read_out(out)  # previous output intact
    assert stats["config"]["min_count"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet", "out"]  # no temp left


def test_text_column_never_feeds_the_vocabulary(spark, tmp_path):
    """An image's `text` (LiT's, e.g. openclipart's SVG title) is not hashtags, #words included;
    a `caption`'s #words are."""
    t = pa.table({"image_id": list(ROWS), "image": [f"img/{k}.jpg" for k in ROWS], "hashtags": list(ROWS.values()),
                  "text": ["a #cat and a #cat"] * len(ROWS)})
    pq.write_table(t, tmp_path / "text.parquet")
    run(spark, VocabConfig(manifest=str(tmp_path / "text.parquet"), out=str(tmp_path / "out")))
    vocab, hmap, _ = read_out(tmp_path / "out")
    assert "cat" not in hmap and [v["name"] for v in vocab] == ["dog", "eggplant", "brownbear", "ice_cream"]
    pq.write_table(t.rename_columns(["image_id", "image", "hashtags", "caption"]), tmp_path / "caption.parquet")
    run(spark, VocabConfig(manifest=str(tmp_path / "caption.parquet"), out=str(tmp_path / "out2")))
    assert "cat" in read_out(tmp_path / "out2")[1]  # the same words as a caption: hashtags


def test_repeated_ids_across_partitions_are_all_found(spark, tmp_path):
    """The fused pass's duplicate check: ids repeated within one partition and across partitions
    (7 files, rows shuffled) are each found once; the distinct raw strings come out once each."""
    from jobs.lib.manifest import ID_HASH, clean_manifest
    from jobs.lib.vocabulary import raw_strings_and_repeated_ids
    rng = np.random.default_rng(3)
    ids = [f"im{i}" for i in range(2000)] + [f"im{i}" for i in range(0, 2000, 7)] + ["im5"] * 3
    rows = [{"image_id": i, "image": f"{i}.jpg", "hashtags": [f"t{int(t)}" for t in rng.integers(0, 300, 3)]}
            for i in ids]
    order = rng.permutation(len(rows))
    for k, part in enumerate(np.array_split(order, 7)):
        (tmp_path / "m").mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pylist([rows[j] for j in part]), tmp_path / "m" / f"part-{k}.parquet")
    checked = clean_manifest(read_manifest(spark, str(tmp_path / "m")))
    out = raw_strings_and_repeated_ids(checked.valid).collect()
    repeated = sorted(r[ID_HASH] for r in out if r[ID_HASH] is not None)
    expected = sorted(r["h"] for r in spark.createDataFrame([(i,) for i in sorted(set(ids)) if ids.count(i) > 1],
                                                            "image_id string").select(F.xxhash64("image_id").alias("h"))
                      .collect())
    assert repeated == expected and len(expected) == len(range(0, 2000, 7)) + 1  # and im5
    raws = [r["raw"] for r in out if r["raw"] is not None]
    assert sorted(raws) == sorted({t for r in rows for t in r["hashtags"]})
    assert checked.stats()["rows_read"] == len(rows)
