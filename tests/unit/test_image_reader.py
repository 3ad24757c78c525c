"""The one image reader against real servers on loopback: local files, tar members by byte range,
an HTTP server with latency and failures, moto's S3 server."""
from __future__ import annotations

import io
import sys
import tarfile

import pytest

from pipeline import image_reader
from pipeline.image_reader import (ReaderSetupError, ReadPolicy, batch_spans, iter_images, locate, read_image,
                                   read_images, redact, scrub, tar_member)
from pipeline.images import ImageRejected
from tests.helpers.servers import azurite_server, gcs_server, http_server

FAST = ReadPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.02, timeout_s=10)


def write_tar(path, members: dict[str, bytes]) -> dict[str, tuple[int, int]]:
    """A tar of `members`; returns name -> (data offset, size) as tarfile reports them."""
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as t:
        return {m.name: (m.offset_data, m.size) for m in t.getmembers()}


def reasons(values) -> list:
    return [v.reason if isinstance(v, ImageRejected) else v for v in values]


def test_local_paths_uris_bytes_and_tar_members(tmp_path):
    (tmp_path / "a b.jpg").write_bytes(b"aaa")
    members = {"k1.jpg": b"first" * 100, "k1.txt": b"caption", "k2.jpg": b"second" * 333}
    index = write_tar(tmp_path / "00000.tar", members)
    refs = [str(tmp_path / "a b.jpg"), "a b.jpg", (tmp_path / "a b.jpg").as_uri(), b"raw",
            *(tar_member(str(tmp_path / "00000.tar"), o, n, m) for m, (o, n) in index.items()),
            tar_member("00000.tar", *index["k2.jpg"]), "", "missing.jpg", "ftp://host/x.jpg",
            tar_member(str(tmp_path / "00000.tar"), 10**6, 5)]
    got, retries = read_images(refs, str(tmp_path))
    assert retries == 0
    assert reasons(got) == [b"aaa", b"aaa", b"aaa", b"raw", *members.values(), members["k2.jpg"],
                            "missing_file", "missing_file", "missing_file", "truncated"]
    assert "empty image reference" in str(got[-4]) and "unsupported URI scheme 'ftp'" in str(got[-2])


def test_http_concurrent_retried_and_failures_by_reason(tmp_path):
    for k in range(20):
        (tmp_path / f"{k}.jpg").write_bytes(bytes([k]) * (100 + k))
    once = {"/3.jpg": 503, "/4.jpg": 429}
    always = {"/5.jpg": 404, "/6.jpg": 403, "/7.jpg": 503, "/8.jpg": 400}
    with http_server(tmp_path, latency_s=0.05, fail_once=once, fail_always=always) as (url, log):
        got, retries = read_images([f"{url}/{k}.jpg" for k in range(20)] + [f"{url}/nope.jpg"], policy=FAST)
    assert reasons(got[:3] + got[9:20]) == [bytes([k]) * (100 + k) for k in (*range(3), *range(9, 20))]
    assert got[3] == bytes([3]) * 103 and got[4] == bytes([4]) * 104  # retried once each
    assert reasons(got[5:9]) == ["missing_file", "access_denied", "unreachable", "read_error"]
    assert got[20].reason == "missing_file"
    assert log.requests["/7.jpg"] == FAST.attempts and log.requests["/5.jpg"] == 1  # permanent: not retried
    assert retries == 2 + (FAST.attempts - 1)  # 3.jpg and 4.jpg once, 7.jpg until the last attempt
    assert log.max_in_flight > 1  # the batch's requests overlapped


def test_http_tar_member_is_one_range_read_of_the_member(tmp_path):
    members = {f"{k:04d}.jpg": bytes([k]) * 5000 for k in range(10)}
    index = write_tar(tmp_path / "shard.tar", members)
    with http_server(tmp_path) as (url, log):
        got, _ = read_images([tar_member(f"{url}/shard.tar", o, n, m) for m, (o, n) in index.items()])
    assert got == list(members.values())
    assert log.bytes_sent == sum(len(v) for v in members.values())  # never the whole tar
    assert sorted(r for _, r in log.ranges) == sorted(f"bytes={o}-{o + n - 1}" for o, n in index.values())


def test_no_query_string_or_password_in_messages(tmp_path):
    secret = "Signature=S3CR3T-SIG"
    with http_server(tmp_path, fail_always={"/gone.jpg": 404, "/busy.jpg": 503}) as (url, _):
        base = url.replace("http://", "http://user:pa55word@")
        got, _ = read_images([f"{base}/gone.jpg?X-Amz-{secret}", f"{url}/busy.jpg?X-Amz-{secret}"], policy=FAST)
    text = " ".join(str(g) for g in got)
    assert [g.reason for g in got] == ["missing_file", "unreachable"]
    assert "S3CR3T" not in text and "pa55word" not in text and "/gone.jpg?..." in text
    assert redact("https://u:p@host/a.jpg?sig=1#offset=1&size=2") == "https://host/a.jpg?...#offset=1&size=2"
    assert scrub("failed: https://me:pw@h/x?token=abc, then s3://b/k") == "failed: https://h/x?... then s3://b/k"


def test_s3_objects_tar_members_and_a_url_image_root(tmp_path, s3):
    members = {"a.jpg": b"A" * 700, "b.jpg": b"B" * 900}
    index = write_tar(tmp_path / "00001.tar", members)
    s3.client.put_object(Bucket=s3.name, Key="img/x.jpg", Body=b"xx")
    s3.client.put_object(Bucket=s3.name, Key="shards/00001.tar", Body=(tmp_path / "00001.tar").read_bytes())
    refs = [f"s3://{s3.name}/img/x.jpg", f"s3://{s3.name}/img/none.jpg", "s3://nobucket/x.jpg",
            *(tar_member(f"s3://{s3.name}/shards/00001.tar", o, n, m) for m, (o, n) in index.items())]
    got, retries = read_images(refs, policy=FAST)
    assert reasons(got) == [b"xx", "missing_file", "missing_file", *members.values()] and retries == 0
    assert read_image("img/x.jpg", f"s3://{s3.name}/") == b"xx"


def test_locate_and_a_missing_extra_is_a_setup_error(monkeypatch):
    assert locate("s3a://b/k").protocol == "s3" and locate("abfss://c@acct/k").protocol == "abfs"
    assert locate("x.jpg", "https://h/base").path == "https://h/base/x.jpg"
    loc = locate(tar_member("t.tar", 512, 9, "k.jpg"), "/data")
    assert (loc.path, loc.offset, loc.size) == ("/data/t.tar", 512, 9)
    monkeypatch.setattr(image_reader, "_FILESYSTEMS", {})
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # `import gcsfs` fails as where the extra is not installed
    with pytest.raises(ReaderSetupError, match=r"'gcs' extra"):
        read_images(["gs://bucket/x.jpg"])


@pytest.mark.parametrize("store", ["gs", "az"])
def test_gcs_and_azure_objects_and_tar_members_on_their_emulators(tmp_path, store):
    members = {"a.jpg": b"A" * 700, "b.jpg": b"B" * 900}
    index = write_tar(tmp_path / "00001.tar", members)
    server = gcs_server("gdata") if store == "gs" else azurite_server(tmp_path / "azurite")
    with server as fs:
        if store == "az":
            fs.mkdir("gdata")
        fs.pipe("gdata/img/x.jpg", b"xx")
        fs.pipe("gdata/shards/00001.tar", (tmp_path / "00001.tar").read_bytes())
        root = f"{store}://gdata"
        refs = [f"{root}/img/x.jpg", f"{root}/img/none.jpg",
                *(tar_member(f"{root}/shards/00001.tar", o, n, m) for m, (o, n) in index.items())]
        got, retries = read_images(refs, policy=FAST)
        assert read_image("img/x.jpg", root) == b"xx"
    assert reasons(got) == [b"xx", "missing_file", *members.values()] and retries == 0


def test_a_server_slower_than_the_timeout_is_retried_then_unreachable(tmp_path):
    (tmp_path / "slow.jpg").write_bytes(b"late")
    policy = ReadPolicy(attempts=2, backoff_s=0.01, timeout_s=0.2)
    with http_server(tmp_path, latency_s=1.0) as (url, log):
        got, retries = read_images([f"{url}/slow.jpg"], policy=policy)
    assert got[0].reason == "unreachable" and retries == 1 and log.requests["/slow.jpg"] == 2


def test_iter_images_keeps_the_order_across_prefetched_batches(tmp_path):
    for k in range(7):
        (tmp_path / f"{k}.jpg").write_bytes(bytes([k]) * (k + 1))
    refs = [f"{k}.jpg" for k in range(7)] + ["none.jpg", b"raw"]
    assert batch_spans(9, ReadPolicy(concurrency=1, batch=4)) == [(0, 1), (1, 3), (3, 7), (7, 9)]
    assert batch_spans(600, ReadPolicy()) == [(0, 32), (32, 96), (96, 224), (224, 480), (480, 600)]
    got = list(iter_images(refs, str(tmp_path), ReadPolicy(concurrency=1, batch=2)))
    assert reasons([v for v, _ in got]) == [bytes([k]) * (k + 1) for k in range(7)] + ["missing_file", b"raw"]
    assert [r for _, r in got] == [0] * 9 and list(iter_images([])) == []
