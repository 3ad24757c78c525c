"""vocab --tags-from caption and the label job that follows it, on a real local[2] SparkSession and
real WordNet; expected labels and counts worked out by hand."""
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from jobs.label import LabelConfig, run as label
from jobs.lib.manifest import ManifestError
from jobs.vocab import VocabConfig, run as vocab

CAPTIONS = {  # image_id -> text; the hashtags column holds "cat" everywhere, which captions mode ignores
    "a": "A dog and an ice cream",   # dog, ice_cream ("a", "an", "and": no entries)
    "b": "Dogs!",                    # dog (a plural emits its lemma)
    "c": "ice-cream, DOG.",          # dog, ice_cream
    "d": "the underdog",             # nothing: dog inside a word does not match
    "e": None,                       # nothing to read
    "f": "A brown bear",             # brown_bear
}


def write_caption_manifest(path, captions=CAPTIONS):
    t = pa.table({"image_id": list(captions), "image": [f"img/{k}.jpg" for k in captions],
                  "hashtags": [["cat"]] * len(captions), "text": list(captions.values())})
    pq.write_table(t, path)
    return str(path)


def test_captions_through_vocab_and_label(spark, tmp_path):
    m = write_caption_manifest(tmp_path / "m.parquet")
    stats = vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab"), min_count=1,
                                     tags_from="caption", caption_column="text"))
    got = {v["name"]: (v["label"], v["hashtags"], v["images"])
           for v in pq.read_table(tmp_path / "vocab" / "vocab.parquet").to_pylist()}
    assert got == {"dog": (0, ["dog"], 3), "ice_cream": (1, ["ice_cream"], 2), "brown_bear": (2, ["brown_bear"], 1)}
    assert stats["rows_read"] == 6 and stats["rows_kept"] == 4 and stats["rows_dropped"]["no_hashtags"] == 2
    assert stats["captions"] == {
        "captions_read": 5, "captions_without_match": 1,
        "entries_per_caption": {"0": 1, "1": 2, "2": 2, **{str(k): 0 for k in range(3, 10)}, "10+": 0},
        "distinct_entries": 3, "top_entries": [["dog", 3], ["ice_cream", 2], ["brown_bear", 1]]}
    on_disk = json.loads((tmp_path / "vocab" / "stats.json").read_text())
    assert on_disk["config"]["tags_from"] == "caption" and on_disk["config"]["caption_column"] == "text"

    # label takes the vocabulary's rule: were it to read the hashtags column ("cat"), nothing would be labelled
    lab = label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "vocab"), out=str(tmp_path / "lab"),
                                   tail_threshold=3))
    t = pq.read_table(tmp_path / "lab" / "labeled.parquet")
    schemas.check_schema(t.schema, schemas.LABELED, "labeled.parquet")
    rows = {r["image_id"]: (r["labels"], r["tail"]) for r in t.to_pylist()}
    assert rows == {"a": ([0, 1], True), "b": ([0], False), "c": ([0, 1], True), "f": ([2], True)}
    assert lab["rows_kept"] == 4 and lab["rows_dropped"]["no_hashtags"] == 2
    assert lab["captions"]["captions_without_match"] == 1


def test_caption_and_hashtag_labels_share_keys(spark, tmp_path):
    """A caption's entries and the same words as hashtags are one label: the same synset keys."""
    m = write_caption_manifest(tmp_path / "c.parquet")
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "from_captions"), min_count=1,
                             tags_from="caption", caption_column="text"))
    t = pa.table({"image_id": ["x", "y", "z"], "image": ["x.jpg", "y.jpg", "z.jpg"],
                  "hashtags": [["#dog", "#dogs"], ["ice cream"], ["brownbear"]]}, schema=schemas.MANIFEST)
    pq.write_table(t, tmp_path / "h.parquet")
    vocab(spark, VocabConfig(manifest=str(tmp_path / "h.parquet"), out=str(tmp_path / "from_hashtags"), min_count=1))

    def keys(d):
        return sorted(v["key"] for v in pq.read_table(tmp_path / d / "vocab.parquet").to_pylist())
    assert keys("from_captions") == keys("from_hashtags")
    assert "brown_bear.n.01" in keys("from_captions")


def test_caption_column_errors_name_the_cause(spark, tmp_path):
    m = write_caption_manifest(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match=r"m\.parquet: no column 'caption' to take tags from"):
        vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "o1"), tags_from="caption"))
    pq.write_table(pa.table({"image_id": ["a"], "image": ["a.jpg"], "text": [3]}), tmp_path / "int.parquet")
    with pytest.raises(ManifestError, match=r"int\.parquet: column 'text' is bigint, expected string"):
        vocab(spark, VocabConfig(manifest=str(tmp_path / "int.parquet"), out=str(tmp_path / "o2"),
                                 tags_from="caption", caption_column="text"))
    with pytest.raises(ValueError, match=r"--tags-from 'captions': valid are hashtags, caption"):
        VocabConfig(manifest=m, out=str(tmp_path / "o3"), tags_from="captions")
    assert not any((tmp_path / f"o{i}").exists() for i in (1, 2, 3))


def test_label_needs_the_vocabularys_config(spark, tmp_path):
    m = write_caption_manifest(tmp_path / "m.parquet", {"a": "a dog", "b": "two dogs"})
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab"), min_count=1,
                             tags_from="caption", caption_column="text"))
    shutil.copytree(tmp_path / "vocab", tmp_path / "bare")
    (tmp_path / "bare" / "stats.json").unlink()
    with pytest.raises(ValueError, match=r"bare/stats\.json: cannot read the vocabulary's config"):
        label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "bare"), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
