"""jobs/shards.py: every labelled image stored once, bad ones counted by reason, the image table,
idempotent reruns that never keep a stale shard, FFCV."""
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
from pipeline.wds import file_sha256, iter_shard, read_samples
from schemas.shard_set import read_shard_set_meta, shard_set_file
from tests.helpers import ROOT
from tests.helpers.images import encode, png_header_only, quadrants, truncated_jpegs
from tests.helpers.jobkit import write_labeled_images


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
        "trunc": (truncated_jpegs()["baseline_60"], "truncated"),  # cut in its scan data, not its header
        "bomb": (png_header_only(30000, 30000), "too_large"),
        "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unsupported_format"),
    }
    out = {}
    for name, (data, reason) in files.items():
        (d / f"{name}.img").write_bytes(data)
        out[name] = (f"{name}.img", reason)  # relative: resolved against --image-root
    out["missing"] = (str(d / "missing.jpg"), "missing_file")
    return out


def read_all(out: Path):
    index = read_shard_set_meta(out).to_dict()
    got = []
    for s in index["shards"]:
        assert file_sha256(out / s["name"]) == s["sha256"]
        members = list(read_samples(out / s["name"]))
        assert len(members) == s["images"]
        got += members
    return index, got


def test_every_image_stored_once_bad_ones_counted(spark, tmp_path):
    images = image_files(tmp_path / "img")
    for k in range(12):  # and some plain good images
        (tmp_path / "img" / f"good{k}.jpg").write_bytes(encode(quadrants(), "JPEG"))
        images[f"good{k:02d}"] = (f"good{k}.jpg", None)
    rows = {r["image_id"]: r for r in write_labeled_images(tmp_path / "labeled", images)}
    out = tmp_path / "shards"
    cfg = ShardsConfig(labeled=str(tmp_path / "labeled"), out=str(out), format=("wds", "ffcv"), shard_size=4,
                       max_side=64, image_root=str(tmp_path / "img"))
    stats = shards(spark, cfg)
    assert (out / "_SUCCESS").exists()
    index, got = read_all(out)
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    expected_rejects = {i: reason for i, (_, reason) in images.items() if reason}
    assert {r["image_id"]: r["reason"] for r in rejects} == expected_rejects
    stored = [sample.image_id for sample in got]
    assert sorted(stored) == sorted(i for i in images if i not in expected_rejects)  # each good image once
    assert len(got) + len(rejects) == len(images) == stats["images_in"] and index["images"] == len(got)
    # stored image k is the k-th member in shards.json order; images.parquet says so
    table = {r["image_id"]: r for r in pq.read_table(out / "images.parquet").to_pylist()}
    assert {i: table[i]["image"] for i in table} == {i: k for k, i in enumerate(stored)}
    first = 0
    for s in index["shards"]:
        assert s["first_image"] == first and 1 <= s["images"] <= 4
        first += s["images"]
    for sample, image_id in zip(got, stored):
        meta = sample.meta
        assert (meta["labels"], meta["tail"]) == (rows[image_id]["labels"], rows[image_id]["tail"])
        im = Image.open(io.BytesIO(sample.image))
        assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) <= 64
    by_reason = {k: v for k, v in index["rejected_images"].items() if v}
    assert by_reason == {r: sum(1 for v in expected_rejects.values() if v == r) for r in set(expected_rejects.values())}
    assert index["num_classes"] == 5
    assert index["ffcv"]["images"] == len(got) and (out / "images.beton").stat().st_size > 0
    # a rerun skips every shard and gives the same index
    again = shards(spark, cfg)
    assert again["shards_skipped"] == len(index["shards"]) and again["shards_written"] == 0
    assert read_shard_set_meta(out).to_dict() == index
    # a damaged shard is rewritten
    (out / index["shards"][1]["name"]).write_bytes(b"garbage")
    assert shards(spark, cfg)["shards_written"] == 1
    assert read_shard_set_meta(out).to_dict() == index
    # other image settings rewrite every shard: no tar of the old settings survives (read_all: each
    # file's sha256 is the one shards.json lists)
    smaller = shards(spark, ShardsConfig(**{**vars(cfg), "max_side": 32}))
    assert smaller["shards_written"] == len(index["shards"]) and smaller["shards_skipped"] == 0
    index32, got32 = read_all(out)
    assert all(min(Image.open(io.BytesIO(sample.image)).size) <= 32 for sample in got32)
    assert sorted(p.name for p in out.glob("shard-*.tar")) == sorted(s["name"] for s in index32["shards"])
    assert [s["name"] for s in index32["shards"]] == [s["name"] for s in index["shards"]]
    assert all(a["sha256"] != b["sha256"] for a, b in zip(index["shards"], index32["shards"]))  # every tar's bytes
    lower = shards(spark, ShardsConfig(**{**vars(cfg), "max_side": 32, "quality": 50}))
    assert lower["shards_written"] == len(index["shards"]) and lower["shards_skipped"] == 0
    index50, got50 = read_all(out)
    assert all(a["sha256"] != b["sha256"] for a, b in zip(index32["shards"], index50["shards"]))
    assert index50["quality"] == 50 and [s.key for s in got50] == [s.key for s in got32]


def test_ffcv_missing_or_bad_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="valid: wds, ffcv"):
        ShardsConfig(labeled="s", out="o", format=("tfrecord",))
    with pytest.raises(ValueError, match="POSIX path"):
        ShardsConfig(labeled="s", out="s3://bucket/x")


@pytest.mark.slow
def test_killed_job_rerun_equals_uninterrupted(spark, tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for i in range(300):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(img / f"{i}.png")
        images[f"im{i:03d}"] = (str(img / f"{i}.png"), None)
    write_labeled_images(tmp_path / "labeled", images)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    killed = tmp_path / "killed"
    p = subprocess.Popen([str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
                          str(ROOT / "jobs" / "shards.py"), "--labeled", str(tmp_path / "labeled"),
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
    assert 10 <= done < 60, done
    assert not (killed / "_SUCCESS").exists() and not shard_set_file(killed).exists()
    cfg = dict(labeled=str(tmp_path / "labeled"), shard_size=5)
    rerun = shards(spark, ShardsConfig(out=str(killed), **cfg))
    assert rerun["shards_skipped"] >= done - 2  # a shard being written at the kill may be redone
    shards(spark, ShardsConfig(out=str(tmp_path / "clean"), **cfg))
    assert shard_set_file(killed).read_text() == shard_set_file(tmp_path / "clean").read_text()
    assert sorted(p.name for p in killed.glob("*.tar")) == sorted(p.name for p in (tmp_path / "clean").glob("*.tar"))
    assert not list(killed.glob(".*.tmp"))  # the killed writer's temp tar is not a shard


# --- each image's text (issue 19: LiT's image-text pairs) -------------------------------------

def _text_images(d: Path) -> tuple[dict, dict]:
    """10 images (one rejected) and their texts: plain, unicode, empty and null."""
    d.mkdir()
    images, texts = {}, {}
    for k in range(9):
        (d / f"g{k}.jpg").write_bytes(encode(Image.new("RGB", (40 + k, 30), (20 * k, 90, 200)), "JPEG"))
        images[f"g{k}"] = (f"g{k}.jpg", None)
        texts[f"g{k}"] = [f"Picture {k}. A café & \"quotes\"", "", None][k % 3] if k % 4 else f"Plain text {k}"
    (d / "bad.jpg").write_bytes(b"")
    images["bad"], texts["bad"] = ("bad.jpg", "undecodable"), "never stored"
    return images, texts


def _text_fingerprint_before_issue_19(rows: list[dict], spec: dict, image_root: str) -> str:
    """The shard fingerprint as jobs/lib/sharding.py computed it before texts: rows in slot order."""
    import hashlib
    h = hashlib.sha256(json.dumps([spec, image_root, 2], sort_keys=True).encode())  # DECODER_VERSION 2
    for r in rows:
        h.update(json.dumps([r["slot"], r["image_id"], r["image"], r["labels"], r["tail"]]).encode())
    return h.hexdigest()


def test_text_goes_into_each_sample_json_and_reruns_rewrite_only_its_shard(spark, tmp_path):
    from pipeline.wds import write_shard

    images, texts = _text_images(tmp_path / "img")
    rows = {r["image_id"]: r for r in write_labeled_images(tmp_path / "with", images, extra={"text": texts})}
    write_labeled_images(tmp_path / "without", images)  # the same rows, no text column
    cfg = dict(shard_size=3, max_side=32, image_root=str(tmp_path / "img"))
    with_text = shards(spark, ShardsConfig(labeled=str(tmp_path / "with"), out=str(tmp_path / "a"), **cfg))
    without = shards(spark, ShardsConfig(labeled=str(tmp_path / "without"), out=str(tmp_path / "b"), **cfg))
    index_a, got_a = read_all(tmp_path / "a")
    index_b, got_b = read_all(tmp_path / "b")
    assert index_a["text"] == with_text["text"] == "text" and index_b["text"] is without["text"] is None
    stored = [sample.image_id for sample in got_a]
    assert sorted(stored) == [f"g{k}" for k in range(9)]
    for sample, image_id in zip(got_a, stored):
        meta = sample.meta
        assert meta["text"] == (texts[image_id] or "") and isinstance(meta["text"], str)
        assert (meta["labels"], meta["tail"]) == (rows[image_id]["labels"], rows[image_id]["tail"])
    assert with_text["images_with_text"] == sum(bool(texts[i]) for i in stored) == 5
    assert without["images_with_text"] == 0
    # without a text column: the .json of before (no "text" key), the same JPEGs, the same tars
    # (rebuilt here from those members) and the fingerprint of before
    assert [s.key for s in got_a] == [s.key for s in got_b]
    raw_b = [parts for s in index_b["shards"] for _, parts in iter_shard(tmp_path / "b" / s["name"])]
    for sa, sb, pb in zip(got_a, got_b, raw_b):
        meta = sb.meta
        assert "text" not in meta and sa.image == sb.image
        assert pb["json"] == json.dumps({k: meta[k] for k in ("image_id", "labels", "tail")}, sort_keys=True).encode()
    slots = {sample.image_id: int(sample.key) for sample in got_b}
    slots["bad"] = next(k for k in range(10) if k not in slots.values())  # the reject holds the missing slot
    spec = {"max_side": 32, "quality": 90, "max_pixels": None}
    for s in index_b["shards"]:
        members = [m for m in got_b if int(m.key) // 3 == int(s["name"][6:12])]
        rebuilt = write_shard(tmp_path / "rebuilt.tar", members)
        assert rebuilt["sha256"] == s["sha256"]
        in_shard = sorted((r for r in rows.values() if slots[r["image_id"]] // 3 == int(s["name"][6:12])),
                          key=lambda r: slots[r["image_id"]])
        fp = _text_fingerprint_before_issue_19([{**r, "slot": slots[r["image_id"]]} for r in in_shard], spec,
                                               str(tmp_path / "img"))
        assert json.loads((tmp_path / "b" / "_shards" / f"{s['name']}.json").read_text())["fingerprint"] == fp
    assert [s["sha256"] for s in index_a["shards"]] != [s["sha256"] for s in index_b["shards"]]
    # one image's new text rewrites its shard only
    changed = stored[4]
    texts[changed] = "A new text"
    write_labeled_images(tmp_path / "with", images, extra={"text": texts})
    rerun = shards(spark, ShardsConfig(labeled=str(tmp_path / "with"), out=str(tmp_path / "a"), **cfg))
    assert (rerun["shards_written"], rerun["shards_skipped"]) == (1, len(index_a["shards"]) - 1)
    index_c, got_c = read_all(tmp_path / "a")
    assert {sample.image_id: sample.meta["text"] for sample in got_c} == \
        {i: texts[i] or "" for i in stored}
    differ = [a["name"] for a, c in zip(index_a["shards"], index_c["shards"]) if a["sha256"] != c["sha256"]]
    assert differ == [shard_of(index_a, stored.index(changed))]


def shard_of(index: dict, image: int) -> str:
    """The name of the shard holding stored image number `image` (shards.json first_image)."""
    return next(s["name"] for s in index["shards"] if s["first_image"] <= image < s["first_image"] + s["images"])


def test_caption_is_the_text_when_there_is_no_text_column(spark, tmp_path):
    images, texts = _text_images(tmp_path / "img")
    captions = {i: f"#cap {i}" for i in images}
    write_labeled_images(tmp_path / "cap", images, extra={"caption": captions})
    write_labeled_images(tmp_path / "both", images, extra={"caption": captions, "text": texts})
    cfg = dict(shard_size=4, max_side=32, image_root=str(tmp_path / "img"))
    cap = shards(spark, ShardsConfig(labeled=str(tmp_path / "cap"), out=str(tmp_path / "c"), **cfg))
    both = shards(spark, ShardsConfig(labeled=str(tmp_path / "both"), out=str(tmp_path / "t"), **cfg))
    assert (cap["text"], both["text"]) == ("caption", "text")
    assert {sample.image_id: sample.meta["text"] for sample in read_all(tmp_path / "c")[1]} \
        == {i: captions[i] for i in images if i != "bad"}
    assert {sample.image_id: sample.meta["text"] for sample in read_all(tmp_path / "t")[1]} \
        == {i: texts[i] or "" for i in images if i != "bad"}
    assert cap["images_with_text"] == 9 and both["images_with_text"] == 5


def test_a_text_column_that_is_not_a_string_is_a_clear_error(spark, tmp_path):
    schema = schemas.LABELED.append(pa.field("text", pa.list_(pa.string())))
    row = {"image_id": "a", "image": "a.jpg", "labels": [0], "importance": 1.0, "tail": False, "text": ["x"]}
    (tmp_path / "lab" / "labeled.parquet").mkdir(parents=True)
    pq.write_table(schemas.with_class_count(pa.Table.from_pylist([row], schema=schema), 1, "vocab"),
                   tmp_path / "lab" / "labeled.parquet" / "part-0.parquet")
    with pytest.raises(ValueError, match=r"labeled.parquet: text column 'text' is array<string>, expected string"):
        shards(spark, ShardsConfig(labeled=str(tmp_path / "lab"), out=str(tmp_path / "out")))
    assert not (tmp_path / "out" / "_SUCCESS").exists()
