"""jobs/shards.py: bad images counted by reason, contiguous shards, idempotent reruns, FFCV."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import schemas
from jobs.shards import ShardsConfig, run as shards
from pipeline.wds import file_sha256, iter_shard
from tests.test_images import encode, png_header_only, quadrants

ROOT = Path(__file__).resolve().parents[1]


def image_files(d: Path) -> dict:
    """image_id -> (path or bytes, expected reject reason or None)."""
    d.mkdir()
    good = encode(quadrants(), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "rgba": (encode(Image.new("RGBA", (400, 300), (0, 0, 255, 128))), None),
        "cmyk": (encode(Image.new("CMYK", (200, 500), (0, 255, 255, 0)), "JPEG"), None),
        "exif6": (encode(quadrants().transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif), None),
        "palette": (encode(Image.new("P", (50, 50), 3)), None),
        "zero": (b"", "undecodable"),
        "html": (b"<!doctype html><html>Not Found</html>", "undecodable"),
        "trunc": (good[: len(good) // 2], "truncated"),
        "bomb": (png_header_only(30000, 30000), "too_large"),
        "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unsupported_format"),
    }
    out = {}
    for name, (data, reason) in files.items():
        (d / f"{name}.img").write_bytes(data)
        out[name] = (f"{name}.img", reason)  # relative: resolved against --image-root
    out["missing"] = (str(d / "missing.jpg"), "missing_file")
    return out


def write_samples(d: Path, images: dict, n: int, vocab_size: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = sorted(images)
    rows = []
    for p in range(n):
        i = ids[int(rng.integers(0, len(ids)))]
        labels = sorted({int(x) for x in rng.integers(0, vocab_size, int(rng.integers(1, 4)))})
        rows.append({"position": p, "image_id": i, "image": images[i][0], "labels": labels, "tail": bool(p % 3 == 0)})
    (d / "samples.parquet").mkdir(parents=True)
    table = schemas.with_class_count(pa.Table.from_pylist(rows, schema=schemas.SAMPLES), vocab_size, "vocab")
    pq.write_table(table, d / "samples.parquet" / "part-0.parquet")
    (d / "stats.json").write_text(json.dumps({"samples": n}))
    return rows


def read_all(out: Path):
    index = json.loads((out / "shards.json").read_text())
    got = []
    for s in index["shards"]:
        assert file_sha256(out / s["name"]) == s["sha256"]
        members = list(iter_shard(out / s["name"]))
        assert len(members) == s["samples"]
        got += members
    return index, got


def test_bad_images_counted_and_every_sample_accounted_for(spark, tmp_path):
    images = image_files(tmp_path / "img")
    rows = write_samples(tmp_path / "samples", images, 60)
    out = tmp_path / "shards"
    cfg = ShardsConfig(samples=str(tmp_path / "samples"), out=str(out), format=("wds", "ffcv"), shard_size=7,
                       max_side=64, image_root=str(tmp_path / "img"))
    stats = shards(spark, cfg)
    assert (out / "_SUCCESS").exists()
    index, got = read_all(out)
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    expected_rejects = {r["position"]: images[r["image_id"]][1] for r in rows if images[r["image_id"]][1]}
    assert {r["position"]: r["reason"] for r in rejects} == expected_rejects
    accepted = [r for r in rows if images[r["image_id"]][1] is None]
    assert len(got) + len(rejects) == len(rows) == stats["samples_in"]
    assert [int(k) for k, _ in got] == list(range(len(accepted)))  # contiguous keys
    assert [s["samples"] for s in index["shards"]][:-1] == [7] * (len(index["shards"]) - 1)
    for (key, parts), row in zip(got, accepted):  # position order is kept
        meta = json.loads(parts["json"])
        assert (meta["position"], meta["image_id"], meta["labels"], meta["tail"]) == \
               (row["position"], row["image_id"], row["labels"], row["tail"])
        im = Image.open(io.BytesIO(parts["jpg"]))
        assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) <= 64
    by_reason = {k: v for k, v in index["rejected_samples"].items() if v}
    assert by_reason == {r: sum(1 for v in expected_rejects.values() if v == r) for r in set(expected_rejects.values())}
    assert index["num_classes"] == 5
    assert index["ffcv"]["samples"] == len(accepted) and (out / "samples.beton").stat().st_size > 0
    # a rerun skips every shard and gives the same index
    again = shards(spark, cfg)
    assert again["shards_skipped"] == len(index["shards"]) and again["shards_written"] == 0
    assert json.loads((out / "shards.json").read_text()) == index
    # a damaged shard is rewritten
    (out / index["shards"][1]["name"]).write_bytes(b"garbage")
    assert shards(spark, cfg)["shards_written"] == 1
    assert json.loads((out / "shards.json").read_text()) == index


def test_ffcv_missing_or_bad_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="valid: wds, ffcv"):
        ShardsConfig(samples="s", out="o", format=("tfrecord",))
    with pytest.raises(ValueError, match="POSIX path"):
        ShardsConfig(samples="s", out="s3://bucket/x")


@pytest.mark.slow
def test_killed_job_rerun_equals_uninterrupted(spark, tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(img / f"{i}.png")
        images[f"im{i:02d}"] = (str(img / f"{i}.png"), None)
    write_samples(tmp_path / "samples", images, 600)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    killed = tmp_path / "killed"
    p = subprocess.Popen([str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
                          str(ROOT / "jobs" / "shards.py"), "--samples", str(tmp_path / "samples"),
                          "--out", str(killed), "--shard-size", "5"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(killed.glob("_shards/*.json"))) < 10:
            time.sleep(0.1)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    done = len(list(killed.glob("_shards/*.json")))
    assert 10 <= done < 120, done
    assert not (killed / "_SUCCESS").exists() and not (killed / "shards.json").exists()
    cfg = dict(samples=str(tmp_path / "samples"), shard_size=5)
    rerun = shards(spark, ShardsConfig(out=str(killed), **cfg))
    assert rerun["shards_skipped"] >= done - 2  # a shard being written at the kill may be redone
    shards(spark, ShardsConfig(out=str(tmp_path / "clean"), **cfg))
    assert (killed / "shards.json").read_text() == (tmp_path / "clean" / "shards.json").read_text()
    assert sorted(p.name for p in killed.glob("*.tar")) == sorted(p.name for p in (tmp_path / "clean").glob("*.tar"))
    assert not list(killed.glob(".*.tmp"))  # the killed writer's temp tar is not a shard
