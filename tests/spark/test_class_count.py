"""The class count C has one source, the vocabulary: jobs/label.py records it in labeled.parquet's
labels column, jobs/resample.py carries it into samples.parquet, jobs/shards.py writes it into
shards.json (from labeled.parquet). A table whose labels or recorded count disagree is refused, naming both sources."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import schemas
from jobs.label import LabelConfig, run as label
from jobs.dataset_card import main as dataset_card
from jobs.resample import ResampleConfig, run as resample
from jobs.shards import ShardsConfig, run as shards
from jobs.vocab import VocabConfig, run as vocab
from schemas.sample_index import read_sample_index_meta
from schemas.shard_set import read_shard_set_meta, shard_set_file
from tests.helpers.jobkit import ROWS, toy_rows, write_labeled, write_labeled_images


def test_vocabulary_size_travels_to_shards_json_and_the_card(spark, tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for i, k in enumerate(ROWS):
        Image.new("RGB", (40, 30), (40 * i, 255 - 40 * i, 128)).save(img / f"{k}.png")
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_id": list(ROWS), "image": [str(img / f"{k}.png") for k in ROWS],
                             "hashtags": list(ROWS.values())}, schema=schemas.MANIFEST), manifest)
    d = {k: str(tmp_path / k) for k in ("vocab", "lab", "s", "sh", "card")}
    vocab(spark, VocabConfig(manifest=str(manifest), out=d["vocab"], min_count=1))
    # dog, eggplant+aubergine, brownbear+ursus_arctos, ice_cream+icecream (tests/spark/test_vocab_job.py)
    label(spark, LabelConfig(manifest=str(manifest), vocab=d["vocab"], out=d["lab"], tail_threshold=3))
    assert schemas.class_count_of(tmp_path / "lab" / "labeled.parquet") == (4, d["vocab"])
    shards(spark, ShardsConfig(labeled=d["lab"], out=d["sh"], shard_size=2, max_side=32))
    index = read_shard_set_meta(tmp_path / "sh").to_dict()
    n_labeled = pq.read_table(tmp_path / "lab" / "labeled.parquet").num_rows
    assert index["num_classes"] == 4 and index["images"] == n_labeled
    resample(spark, ResampleConfig(labeled=d["lab"], out=d["s"], num_samples=40, alpha=1.0, seed=0, shards=d["sh"]))
    assert schemas.class_count_of(tmp_path / "s" / "samples.parquet") == (4, d["vocab"])
    assert read_sample_index_meta(tmp_path / "s").to_dict()["samples"] == [40]

    dataset_card(["--manifest", str(manifest), "--vocab", d["vocab"], "--labeled", d["lab"], "--samples", d["s"],
                  "--out", d["card"], "--threads", "1"])
    md = (tmp_path / "card" / "dataset_card.md").read_text()
    # by hand from ROWS: dog a-e, eggplant a c e, aubergine b; newyork and zzzz have no synsets
    assert "9 distinct normalized hashtags merge into 4 canonical labels" in md
    assert "| 0 | dog | 5 | dog (5) |" in md
    assert "| 1 | eggplant | 4 | eggplant (3), aubergine (1) |" in md


def test_labels_outside_the_recorded_class_count_are_refused(spark, tmp_path):
    rows = toy_rows()  # labels 0..6
    lab = write_labeled(tmp_path / "lab", rows, num_classes=5)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'lab'}/labeled.parquet: label 6 is outside \[0, 5\), "
                                         rf"the class count of the vocabulary {tmp_path / 'lab' / 'vocab'}"):
        resample(spark, ResampleConfig(labeled=lab, out=str(tmp_path / "s"), num_samples=100))
    bare = tmp_path / "bare" / "labeled.parquet"
    bare.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.LABELED), bare / "part-0.parquet")
    with pytest.raises(ValueError, match=r"bare/labeled.parquet: the labels column records no class count"):
        resample(spark, ResampleConfig(labeled=str(tmp_path / "bare"), out=str(tmp_path / "s"), num_samples=100))
    assert not (tmp_path / "s").exists()


def test_shards_of_labels_outside_the_recorded_class_count_are_refused(spark, tmp_path):
    images = {f"x{i}": (f"x{i}.png", None) for i in range(30)}  # refused before any image is read
    write_labeled_images(tmp_path / "lab", images, vocab_size=5)
    part = tmp_path / "lab" / "labeled.parquet" / "part-0.parquet"
    t = pq.read_table(part).replace_schema_metadata(None)
    pq.write_table(schemas.with_class_count(t, 3, "some/vocab"), part)
    with pytest.raises(ValueError, match=r"labeled.parquet: label [34] is outside \[0, 3\), the class count of "
                                         r"the vocabulary some/vocab"):
        shards(spark, ShardsConfig(labeled=str(tmp_path / "lab"), out=str(tmp_path / "sh")))
    pq.write_table(t, part)
    with pytest.raises(ValueError, match="labeled.parquet: the labels column records no class count"):
        shards(spark, ShardsConfig(labeled=str(tmp_path / "lab"), out=str(tmp_path / "sh")))
    assert not shard_set_file(tmp_path / "sh").exists()
