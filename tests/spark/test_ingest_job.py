"""The ingest job end to end on a real local[2] SparkSession: YFCC100M metadata (both layouts,
plain and bz2, autotags), img2dataset folders in its three formats, tables (CC12M's headerless
TSV, a DataComp-style parquet, JSON Lines), the vocabulary job on an ingested manifest, and the
real spark-submit once."""
import bz2
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.ingest import IngestConfig, main, run
from jobs.vocab import VocabConfig, run as vocab
from pipeline.image_reader import read_image
from tests.helpers import ROOT
from tests.helpers.launch import project_env
from tests.helpers.servers import upload_tree

SPARK_SUBMIT = str(Path(sys.executable).parent / "spark-submit")


def manifest(out: Path) -> dict:
    assert (out / "manifest.parquet" / "_SUCCESS").exists()
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len({r["image_id"] for r in rows}) == len(rows)
    return {r["image_id"]: r for r in rows}


def stats_of(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


# --- YFCC100M ---------------------------------------------------------------------------------

def yfcc25(pid, tags, title="", desc="", marker="0", machine="", lon="", lat="", h=None):
    h = h or hashlib.md5(pid.encode()).hexdigest()
    return "\t".join([f"{pid}0", pid, h, f"{pid}@N01", "nick", "2010-01-01 00:00:00.0", "1262304000", "Canon",
                      title, desc, tags, machine, lon, lat, "", f"http://flickr/{pid}", f"http://img/{pid}.jpg",
                      "Attribution License", "http://lic", "1", "2", "s", "os", "jpg", marker])


def yfcc23(pid, tags, lon="", lat=""):
    """The older layout: the same fields without the line number (0) and the photo hash (2)."""
    f = yfcc25(pid, tags, lon=lon, lat=lat).split("\t")
    return "\t".join([f[1], *f[3:]])


@pytest.fixture(scope="module")
def yfcc(tmp_path_factory):
    d = tmp_path_factory.mktemp("yfcc")
    plain = [yfcc25("101", "canon,canon+powershot+hs+310", "My+cat", "on+the+sofa"),
             yfcc25("102", "%zz,dog", desc="%zz"),        # a tag and the description undecodable
             yfcc25("103", "a+video", marker="1"),
             "just\tthree\tfields",
             yfcc25("104", "%zz"),                        # nothing decodable left
             yfcc25("105", "", "Sunset", machine="vision%3Aoutdoor")]
    (d / "meta").mkdir()
    (d / "meta" / "part-a.txt").write_text("\n".join(plain) + "\n")
    old = [yfcc23("201", "beach,sea", "1.5", "-2.25"), yfcc23("201", "beach,sea", "1.5", "-2.25"), yfcc23("202", "")]
    (d / "meta" / "part-b.txt.bz2").write_bytes(bz2.compress(("\n".join(old) + "\n").encode()))
    (d / "autotags.txt").write_text("101\tindoor:0.8,cat:0.95\n202\tsky:0.9,cloud:0.2\nbadline\n")
    return d


def test_yfcc100m_both_layouts_autotags_and_counts(spark, yfcc, tmp_path):
    out = tmp_path / "out"
    stats = run(spark, IngestConfig(format="yfcc100m", input=str(yfcc / "meta"), out=str(out), machine_tags=True,
                                    autotags=str(yfcc / "autotags.txt"), autotag_min_score=0.5))
    rows = manifest(out)
    got = {k: (r["image"], r["hashtags"], r["text"], r["user"], r["license"], r["lon"], r["lat"])
           for k, r in rows.items()}
    lic = "Attribution License"
    assert got == {
        "101": ("http://img/101.jpg", ["canon", "canon powershot hs 310", "indoor", "cat"], "My cat\non the sofa",
                "101@N01", lic, None, None),
        "102": ("http://img/102.jpg", ["dog"], None, "102@N01", lic, None, None),
        "105": ("http://img/105.jpg", ["vision:outdoor"], "Sunset", "105@N01", lic, None, None),
        "201": ("http://img/201.jpg", ["beach", "sea"], None, "201@N01", lic, 1.5, -2.25),
        "202": ("http://img/202.jpg", ["sky"], None, "202@N01", lic, None, None),
    }
    assert list(pq.read_table(out / "manifest.parquet").column_names[:4]) == ["image_id", "image", "hashtags", "text"]
    assert stats["rows_read"] == 9 and stats["rows_written"] == 5
    assert stats["rows_dropped"] == {"malformed": 1, "video": 1, "empty_id": 0, "no_hash": 0, "empty_image": 0,
                                     "no_tags_or_text": 1, "duplicate_id": 1}
    assert stats["undecodable_tag"] == 1 and stats["undecodable_text"] == 1
    assert stats["autotags"] == {"lines": 3, "malformed": 1}
    assert stats_of(out) == json.loads(json.dumps(stats))

    # the vocabulary job takes the ingested manifest as it is
    v = vocab(spark, VocabConfig(manifest=str(out / "manifest.parquet"), out=str(tmp_path / "vocab"), min_count=1))
    assert v["rows_read"] == 5 and v["rows_kept"] == 5 and v["vocab_size"] >= 3


def test_yfcc100m_images_by_hash(spark, yfcc, tmp_path):
    out = tmp_path / "out"
    stats = run(spark, IngestConfig(format="yfcc100m", input=str(yfcc / "meta"), out=str(out), images_root="s3://mmc/"))
    h = hashlib.md5(b"101").hexdigest()
    rows = manifest(out)
    assert sorted(rows) == ["101", "102", "105"]
    assert rows["101"]["image"] == f"s3://mmc/{h[:3]}/{h[3:6]}/{h}.jpg" and rows["105"]["hashtags"] == []
    assert stats["rows_dropped"] == {"malformed": 1, "video": 1, "empty_id": 0, "no_hash": 3, "empty_image": 0,
                                     "no_tags_or_text": 1, "duplicate_id": 0}


# --- img2dataset ------------------------------------------------------------------------------

def jpeg(colour) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(b, "JPEG")
    return b.getvalue()


# shard -> [(key, status, caption)]; the last key of shard 00001 succeeded but its image is missing
SHARDS = {"00000": [("000000000", "success", "a #dog on grass"), ("000000001", "failed_to_download", None),
                    ("000000002", "success", "#cat")],
          "00001": [("000010000", "success", "red #car"), ("000010001", "failed_to_resize", None),
                    ("000010002", "success", "lost")]}
MISSING = "000010002"
IMAGES = {k: jpeg((40 * i, 255 - 30 * i, 7 * i)) for i, k in enumerate(k for s in SHARDS.values() for k, _, _ in s)}
KEPT = ["000000000", "000000002", "000010000"]


def img2dataset_folder(d: Path, fmt: str) -> Path:
    d.mkdir()
    for shard, rows in SHARDS.items():
        ok = [k for k, s, _ in rows if s == "success" and k != MISSING]
        table = {"key": [k for k, _, _ in rows], "status": [s for _, s, _ in rows],
                 "error_message": [None if s == "success" else "boom" for _, s, _ in rows],
                 "caption": [c for _, _, c in rows], "url": [f"http://x/{k}.jpg" for k, _, _ in rows],
                 "width": [8 if s == "success" else None for _, s, _ in rows],
                 "height": [6 if s == "success" else None for _, s, _ in rows],
                 "uid": [f"uid{k}" for k, _, _ in rows]}
        if fmt == "parquet":
            table["jpg"] = [IMAGES[k] if k in ok else None for k, _, _ in rows]
        pq.write_table(pa.table(table), d / f"{shard}.parquet")
        if fmt == "webdataset":
            with tarfile.open(d / f"{shard}.tar", "w") as tar:
                for k in ok:
                    for suffix, data in ((".jpg", IMAGES[k]), (".txt", b"caption"), (".json", b"{}")):
                        info = tarfile.TarInfo(k + suffix)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                if shard == "00000":
                    info = tarfile.TarInfo("../escape.jpg")
                    info.size = 3
                    tar.addfile(info, io.BytesIO(b"bad"))
        elif fmt == "files":
            (d / shard).mkdir()
            for k in ok:
                (d / shard / f"{k}.jpg").write_bytes(IMAGES[k])
                (d / shard / f"{k}.txt").write_text("caption")
        (d / f"{shard}_stats.json").write_text("{}")
    return d


I2D_DROPPED = {"status_failed_to_download": 1, "status_failed_to_resize": 1, "status_other": 0, "empty_id": 0,
               "missing_member": 1, "empty_image": 0, "no_tags_or_text": 0, "duplicate_id": 0}


@pytest.mark.parametrize("fmt", ["webdataset", "files", "parquet"])
def test_img2dataset_formats(spark, tmp_path, fmt):
    folder = img2dataset_folder(tmp_path / "i2d", fmt)
    out = tmp_path / "out"
    id_column = "uid" if fmt == "parquet" else "key"
    stats = run(spark, IngestConfig(format="img2dataset", input=str(folder), out=str(out), id_column=id_column))
    rows = manifest(out)
    ids = {(f"uid{k}" if fmt == "parquet" else k): k for k in KEPT}
    assert sorted(rows) == sorted(ids) and stats["input_format"] == fmt
    captions = {k: c for s in SHARDS.values() for k, _, c in s}
    for i, k in ids.items():
        r = rows[i]
        assert (r["caption"], r["url"], r["width"], r["height"], r["hashtags"]) == \
            (captions[k], f"http://x/{k}.jpg", 8, 6, [])
        assert read_image(r["image"]) == IMAGES[k]
        if fmt == "files":
            assert r["image"] == str(folder / k[:5] / f"{k}.jpg")
        elif fmt == "webdataset":
            assert r["image"].startswith(f"{folder}/{k[:5]}.tar#offset=") and r["image"].endswith(f"&member={k}.jpg")
        else:
            assert r["image"] == IMAGES[k] and r["key"] == k
    dropped = dict(I2D_DROPPED)
    if fmt == "parquet":
        dropped["missing_member"], dropped["empty_image"] = 0, 1
    assert stats["rows_read"] == 6 and stats["rows_written"] == 3 and stats["rows_dropped"] == dropped
    if fmt == "webdataset":
        assert stats["members_refused"] == {"unsafe_member": 1, "not_a_file": 0}


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_img2dataset_folder_in_s3(spark, s3, tmp_path, fmt):
    """The folder in object storage: listed, its tars indexed and its .parquet rows read through
    fsspec (Spark's own readers would need hadoop-aws); the images referenced where they lie."""
    folder = img2dataset_folder(tmp_path / "i2d", fmt)
    upload_tree(s3.client, s3.name, folder, "corpus/i2d/")
    root = f"s3://{s3.name}/corpus/i2d"
    stats = run(spark, IngestConfig(format="img2dataset", input=root, out=str(tmp_path / "out")))
    rows = manifest(tmp_path / "out")
    assert sorted(rows) == KEPT and stats["input_format"] == fmt
    assert all(read_image(rows[k]["image"]) == IMAGES[k] for k in KEPT)
    if fmt == "webdataset":
        assert all(rows[k]["image"].startswith(f"{root}/{k[:5]}.tar#offset=") for k in KEPT)
    dropped = dict(I2D_DROPPED, **({"missing_member": 0, "empty_image": 1} if fmt == "parquet" else {}))
    assert stats["rows_read"] == 6 and stats["rows_written"] == 3 and stats["rows_dropped"] == dropped


# --- tables -----------------------------------------------------------------------------------

def sha_id(ref: str) -> str:
    return hashlib.sha1(ref.encode()).hexdigest()[:24]


def test_cc12m_tsv_hashed_ids_and_duplicate_images(spark, tmp_path):
    tsv = tmp_path / "cc12m.tsv"
    tsv.write_text('http://x/1.jpg\ta "quoted" #dog\nhttp://x/2.jpg\ttwo\n\tno image\n'
                   'http://x/1.jpg\ta "quoted" #dog\nhttp://x/3.jpg\t \n')
    out = tmp_path / "out"
    stats = run(spark, IngestConfig(format="table", input=str(tsv), out=str(out), columns=("image", "caption")))
    rows = manifest(out)
    assert {k: (r["image"], r["caption"], r["hashtags"]) for k, r in rows.items()} == {
        sha_id("http://x/1.jpg"): ("http://x/1.jpg", 'a "quoted" #dog', []),
        sha_id("http://x/2.jpg"): ("http://x/2.jpg", "two", [])}
    assert stats["rows_dropped"] == {"empty_id": 0, "empty_image": 1, "no_tags_or_text": 1, "duplicate_image": 1}
    assert stats["rows_read"] == 5 and stats["rows_written"] == 2


def test_datacomp_parquet_and_jsonl_tags(spark, tmp_path):
    pq.write_table(pa.table({"uid": ["u1", "u2", "u1", "u3"], "url": ["http://a", "http://b", "http://a", ""],
                             "text": ["a photo of a dog", None, "a photo of a dog", "x"],
                             "score": [0.3, 0.2, 0.3, 0.1]}), tmp_path / "datacomp.parquet")
    out = tmp_path / "dc"
    stats = run(spark, IngestConfig(format="table", input=str(tmp_path / "datacomp.parquet"), out=str(out),
                                    id="uid", image="url", text="text"))
    assert {k: (r["image"], r["text"], r["score"]) for k, r in manifest(out).items()} == {
        "u1": ("http://a", "a photo of a dog", 0.3)}
    assert stats["rows_dropped"] == {"empty_id": 0, "empty_image": 1, "no_tags_or_text": 1, "duplicate_id": 1}

    lines = [{"id": "a", "path": "a.jpg", "tags": ["x", " ", "y"]}, {"id": "", "path": "b.jpg", "tags": ["z"]},
             {"id": "c", "path": "c.jpg", "tags": []}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    stats = run(spark, IngestConfig(format="table", input=str(tmp_path / "t.jsonl"), out=str(tmp_path / "j"), id="id",
                                    image="path", tags="tags"))
    assert {k: (r["image"], r["hashtags"]) for k, r in manifest(tmp_path / "j").items()} == {"a": ("a.jpg", ["x", "y"])}
    assert stats["rows_dropped"] == {"empty_id": 1, "empty_image": 0, "no_tags_or_text": 1, "duplicate_id": 0}


TABLES = {  # name -> (file bytes, IngestConfig keywords): each read from S3 must give what Spark's readers give
    "cc12m.tsv": (b'http://x/1.jpg\ta "quoted" #dog\nhttp://x/2.jpg\ttwo\n\tno image\n'
                  b'http://x/1.jpg\ta "quoted" #dog\n', {"columns": ("image", "caption")}),
    "cc3m.tsv.gz": (gzip.compress(b"a #cat, 007\thttp://y/1.jpg\tx\nno url\t\ty\n"), {"columns": ("caption", "image")}),
    "laion.csv": (b'URL,TEXT,pwidth\nhttp://z/1.jpg,"a, b #c",007\nhttp://z/2.jpg,plain,12\n',
                  {"image": "URL", "caption": "TEXT"}),
    "t.jsonl": (b'{"id": "a", "path": "a.jpg", "tags": ["x", " ", "y"], "n": 1}\n'
                b'{"id": "b", "path": "", "tags": ["z"]}\n', {"id": "id", "image": "path", "tags": "tags"}),
}


def test_tables_in_s3_read_as_spark_reads_them_locally(spark, s3, tmp_path):
    """A remote table is read in the tasks through fsspec (no hadoop-aws): the manifest and counts
    equal those of the same file read locally by Spark's own readers."""
    pq.write_table(pa.table({"uid": ["u1", "u2"], "url": ["http://a", "http://b"], "text": ["t1", None]}),
                   tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"uid": ["u3"], "url": ["http://c"], "text": ["t3"], "extra": [1]}),
                   tmp_path / "part-1.parquet")
    for k in (0, 1):
        body = (tmp_path / f"part-{k}.parquet").read_bytes()
        s3.client.put_object(Bucket=s3.name, Key=f"dc/part-{k}.parquet", Body=body)
    s3.client.put_object(Bucket=s3.name, Key="dc/_SUCCESS", Body=b"")
    (tmp_path / "dc").mkdir()
    for k in (0, 1):  # the local copy as Spark reads a folder; the remote table's schema is its first file's
        (tmp_path / "dc" / f"part-{k}.parquet").write_bytes((tmp_path / f"part-{k}.parquet").read_bytes())
    cases = {name: (data, kw) for name, (data, kw) in TABLES.items()}
    cases["dc"] = (None, {"id": "uid", "image": "url", "text": "text"})
    for name, (data, kw) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
            s3.client.put_object(Bucket=s3.name, Key=name, Body=data)
        fmt = {"dc": {"table_format": "parquet"}}.get(name, {})
        remote = run(spark, IngestConfig(format="table", input=f"s3://{s3.name}/{name}",
                                         out=str(tmp_path / f"r-{name}"), **fmt, **kw))
        local = run(spark, IngestConfig(format="table", input=str(tmp_path / name), out=str(tmp_path / f"l-{name}"),
                                        **fmt, **kw))
        got, want = manifest(tmp_path / f"r-{name}"), manifest(tmp_path / f"l-{name}")
        if name == "dc":  # Spark merges the parts' schemas; the remote reader keeps the first file's
            want = {k: {c: v for c, v in r.items() if c != "extra"} for k, r in want.items()}
        assert got == want and got, name
        assert (remote["rows_read"], remote["rows_dropped"]) == (local["rows_read"], local["rows_dropped"]), name


def test_nothing_usable_fails_naming_the_input_and_commits_nothing(spark, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("image,tags\n,a|b\nx.jpg,\n")
    with pytest.raises(ValueError, match=f"{csv}: no usable rows .*'empty_image': 1, 'no_tags_or_text': 1"):
        run(spark, IngestConfig(format="table", input=str(csv), out=str(tmp_path / "out"), tags="tags", tags_sep="|"))
    assert not (tmp_path / "out" / "manifest.parquet").exists() and not (tmp_path / "out" / "stats.json").exists()


def test_flags_of_another_format_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--format", "table", "--input", "x.tsv", "--out", "o", "--autotags", "a.txt"])
    assert e.value.code == 2 and "--autotags applies to --format yfcc100m" in capsys.readouterr().err


def test_spark_submit_cli(tmp_path):
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("a #dog\thttp://x/1.jpg\nsky\thttp://x/2.jpg\n")
    out = tmp_path / "out"
    r = subprocess.run([SPARK_SUBMIT, "--master", "local[1]", "--conf", "spark.ui.enabled=false",
                        str(ROOT / "jobs" / "ingest.py"), "--format", "table", "--input", str(tsv), "--out", str(out),
                        "--columns", "caption,image"],
                       env=project_env(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ingest: 2 of 2 rows (table)" in r.stdout
    assert {k: r["caption"] for k, r in manifest(out).items()} == {sha_id("http://x/1.jpg"): "a #dog",
                                                                   sha_id("http://x/2.jpg"): "sky"}
    assert stats_of(out)["rows_written"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet", "stats.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cc3m.tsv", "out"]  # no temporary siblings left
