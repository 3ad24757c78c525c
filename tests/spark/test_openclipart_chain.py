"""The whole data chain on the real openclipart corpus: every resampled sample is either in the
shards (same labels and text, a decodable JPEG with shorter side <= max-side) or rejected with a
reason."""
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.ingest_openclipart import main as ingest
from jobs.label import LabelConfig, run as label
from jobs.resample import ResampleConfig, run as resample
from jobs.shards import ShardsConfig, run as shards
from jobs.vocab import VocabConfig, run as vocab
from pipeline.wds import read_samples
from schemas.sample_index import read_sample_index_meta
from schemas.shard_set import read_shard_set_meta

CORPUS = Path("/usr/share/openclipart")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CORPUS / "png").is_dir(), reason="no openclipart")]


def test_openclipart_round_trip(spark, tmp_path):
    ingest(["--root", str(CORPUS), "--out", str(tmp_path / "m")])
    m = str(tmp_path / "m" / "manifest.parquet")
    vocab(spark, VocabConfig(manifest=m, out=str(tmp_path / "vocab")))
    label(spark, LabelConfig(manifest=m, vocab=str(tmp_path / "vocab"), out=str(tmp_path / "lab"), tail_threshold=10))
    stats = shards(spark, ShardsConfig(labeled=str(tmp_path / "lab"), out=str(tmp_path / "sh"), shard_size=250,
                                       max_side=96))
    resample(spark, ResampleConfig(labeled=str(tmp_path / "lab"), out=str(tmp_path / "s"), num_samples=3000, seed=1,
                                   shards=str(tmp_path / "sh")))
    labeled = {r["image_id"]: r for r in pq.read_table(tmp_path / "lab" / "labeled.parquet").to_pylist()}
    rejects = {r["image_id"]: r["reason"] for r in pq.read_table(tmp_path / "sh" / "rejects.parquet").to_pylist()}
    index = read_shard_set_meta(tmp_path / "sh").to_dict()
    seen = []
    for s in index["shards"]:
        for sample in read_samples(tmp_path / "sh" / s["name"]):
            meta = sample.meta
            im = Image.open(io.BytesIO(sample.image))
            im.load()
            assert im.mode == "RGB" and min(im.size) <= 96
            assert meta["labels"] == labeled[meta["image_id"]]["labels"]
            assert meta["text"] == (labeled[meta["image_id"]]["text"] or "")  # the SVG's title + description
            seen.append(meta["image_id"])
    assert len(seen) == len(set(seen)) == stats["images"]  # every stored image once
    assert index["text"] == "text" and stats["images_with_text"] > 0.9 * stats["images"]
    assert set(seen) | set(rejects) == set(labeled) and not set(seen) & set(rejects)
    assert len(rejects) == sum(index["rejected_images"].values())
    # the sample index: the draw's samples of stored images, those of rejected images counted
    samples = pq.read_table(tmp_path / "s" / "samples.parquet").to_pylist()
    bound = read_sample_index_meta(tmp_path / "s").to_dict()
    n_rejected = sum(r["image_id"] in rejects for r in samples)
    assert bound["rejected_samples"] == [n_rejected] and bound["samples"] == [3000 - n_rejected]
    assert set(rejects.values()) <= {"too_large"}  # openclipart's only bad images are its giants
