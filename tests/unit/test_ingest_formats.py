"""The ingest job's pure per-format helpers (pipeline/ingest/) on plain values: YFCC100M layouts
and image paths, img2dataset folder detection and tar indexing, table column maps."""
import io
import tarfile

import pytest

from pipeline.image_reader import read_image
from pipeline.ingest import split_sql, sql_str
from pipeline.ingest import img2dataset as I2D
from pipeline.ingest import table as TABLE
from pipeline.ingest import yfcc100m as Y
from pipeline.tar_members import ShardError


def test_yfcc_layouts_by_field_count():
    assert len(Y.FIELDS) == 25 and sorted(Y.LAYOUTS) == [23, 25]
    assert Y.field_index("photo_id", 25) == 1 and Y.field_index("photo_id", 23) == 0
    assert Y.field_index("user_tags", 25) == 10 and Y.field_index("user_tags", 23) == 8
    assert Y.field_index("download_url", 25) == 16 and Y.field_index("download_url", 23) == 14
    assert Y.field_index("marker", 25) == 24 and Y.field_index("marker", 23) == 22
    assert Y.field_index("photo_hash", 25) == 2 and Y.field_index("photo_hash", 23) is None
    assert Y.field_index("line_number", 23) is None and Y.field_index("photo_id", 24) is None
    assert Y.field_sql("photo_hash") == "(CASE size(_f) WHEN 25 THEN _f[2] END)"
    assert Y.field_sql("title") == "(CASE size(_f) WHEN 23 THEN _f[6] WHEN 25 THEN _f[8] END)"
    with pytest.raises(ValueError, match="unknown YFCC100M field 'tag'"):
        Y.field_sql("tag")


def test_multimedia_commons_path():
    h = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert Y.mmc_path("s3://multimedia-commons/data/images/", h) == \
        f"s3://multimedia-commons/data/images/a1b/2c3/{h}.jpg"
    assert Y.mmc_path("/data/images", h) == f"/data/images/a1b/2c3/{h}.jpg"


def test_sql_literals_quote_what_they_hold():
    assert sql_str("it's a \\ b") == "'it\\'s a \\\\ b'"
    assert split_sql("c", "|") == "split(coalesce(c, ''), '\\\\Q|\\\\E', -1)"
    with pytest.raises(ValueError):
        split_sql("c", "")


def test_img2dataset_format_detection_and_shards():
    assert I2D.detect_format([("00000.tar", False), ("00000.parquet", False)]) == "webdataset"
    assert I2D.detect_format([("00000", True), ("00000.parquet", False), ("00000_stats.json", False)]) == "files"
    assert I2D.detect_format([("00000.parquet", False), ("00001.parquet", False)]) == "parquet"
    with pytest.raises(ValueError, match="no img2dataset output"):
        I2D.detect_format([("readme.txt", False)])
    entries = [("00001.parquet", False), ("00000.parquet", False), ("00000_stats.json", False), ("x.parquet", False)]
    assert I2D.shard_files(entries, ".parquet") == ["00000.parquet", "00001.parquet"]
    assert I2D.status_reason("failed_to_download") == "status_failed_to_download"
    assert I2D.status_reason(None) == I2D.status_reason("weird") == "status_other"
    assert I2D.split_member("dir/000001.JPG") == ("000001", ".jpg")


def _tar(members: list) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "000000.jpg"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_index_offsets_give_the_members_bytes(tmp_path):
    long_key = "k" * 120  # a GNU long name: the data does not follow the first header
    members = [("000000.jpg", b"\xff\xd8one", "file"), ("000000.txt", b"a caption", "file"),
               ("000000.json", b"{}", "file"), ("000001.jpg", bytes(range(256)) * 5, "file"),
               (f"{long_key}.jpg", b"\xff\xd8long", "file"), ("../evil.jpg", b"x", "file"),
               ("/abs.jpg", b"y", "file"), ("link.jpg", b"", "link")]
    path = tmp_path / "00007.tar"
    path.write_bytes(_tar(members))
    rows = I2D.index_tar_url(str(path), "00007")
    images = [r for r in rows if r[6] is None]
    assert [(r[1], r[2]) for r in images] == [("000000", "000000.jpg"), ("000001", "000001.jpg"),
                                              (long_key, f"{long_key}.jpg")]
    with tarfile.open(path) as tar:
        for shard, key, member, offset, size, ref, _ in images:
            want = tar.extractfile(member).read()
            assert shard == "00007" and size == len(want)
            assert path.read_bytes()[offset:offset + size] == want
            assert read_image(ref) == want
    assert [(r[2], r[6]) for r in rows if r[6]] == [("../evil.jpg", I2D.UNSAFE_MEMBER), ("/abs.jpg", I2D.UNSAFE_MEMBER),
                                                    ("link.jpg", I2D.NOT_A_FILE)]


def test_a_damaged_tar_fails_naming_it(tmp_path):
    path = tmp_path / "00000.tar"
    path.write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ShardError, match="00000.tar: damaged tar"):
        I2D.index_tar_url(str(path), "00000")


def test_folder_index_keeps_image_files(tmp_path):
    rows = list(I2D.index_folder("/data/00003", ["000030.jpg", "000030.txt", "000031.json", "000032.png"], "00003"))
    assert rows == [("00003", "000030", "000030.jpg", None, None, "/data/00003/000030.jpg", None),
                    ("00003", "000032", "000032.png", None, None, "/data/00003/000032.png", None)]


def test_table_format_from_suffix():
    assert TABLE.table_format("cc12m.tsv") == "tsv" and TABLE.table_format("x.csv.gz") == "csv"
    assert TABLE.table_format("s3://b/datacomp.parquet/") == "parquet"
    assert TABLE.table_format("a.jsonl.bz2") == "jsonl"
    with pytest.raises(ValueError, match="pass --table-format"):
        TABLE.table_format("/data/parts")


def test_table_source_columns():
    cols = ["uid", "url", "text", "extra"]
    assert TABLE.source_columns(cols, {"id": "uid", "image": "url", "text": "text"}) == \
        {"image_id": "uid", "image": "url", "text": "text"}
    assert TABLE.source_columns(["image", "caption"], {}) == {"image": "image", "caption": "caption"}
    assert TABLE.source_columns(["image_id", "image", "hashtags"], {}) == {"image": "image", "hashtags": "hashtags"}
    with pytest.raises(ValueError, match="--image pic: no such column"):
        TABLE.source_columns(cols, {"image": "pic", "text": "text"})
    with pytest.raises(ValueError, match="no image column"):
        TABLE.source_columns(cols, {"text": "text"})
    with pytest.raises(ValueError, match="no hashtags, caption or text"):
        TABLE.source_columns(["uid", "url"], {"image": "url"})
