"""Tar shard writing is deterministic and atomic; unsafe members are refused."""
import io
import tarfile

import pytest

from pipeline.wds import Sample, ShardError, iter_shard, write_shard


def test_write_read_back_and_deterministic_bytes(tmp_path):
    samples = [Sample(f"{k:09d}", bytes([k]) * 10, meta={"labels": [k], "position": k}) for k in range(5)]
    a = write_shard(tmp_path / "a.tar", samples)
    b = write_shard(tmp_path / "b.tar", samples)
    assert a == b and a["samples"] == 5
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    got = list(iter_shard(tmp_path / "a.tar"))
    assert [k for k, _ in got] == [s.key for s in samples]
    assert got[3][1]["jpg"] == bytes([3]) * 10 and b'"labels": [3]' in got[3][1]["json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield Sample("000000000", b"x", meta={})
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "s.tar", broken())
    assert list(tmp_path.iterdir()) == []


def evil_tar(path, name, data=b"x"):
    with tarfile.open(path, "w") as t:
        ok = tarfile.TarInfo("000000000.jpg")
        ok.size = 1
        t.addfile(ok, io.BytesIO(b"y"))
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("name", ["000000001.pyd", "000000001.pickle", "000000001.PKL", "../evil.jpg",
                                  "/etc/evil.jpg", "a/../../evil.json"])
def test_unsafe_members_are_refused(tmp_path, name):
    evil_tar(tmp_path / "evil.tar", name)
    with pytest.raises(ShardError, match=r"evil\.tar.*refusing"):
        list(iter_shard(tmp_path / "evil.tar"))


def test_links_are_refused(tmp_path):
    with tarfile.open(tmp_path / "link.tar", "w") as t:
        info = tarfile.TarInfo("000000000.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    with pytest.raises(ShardError, match="non-file"):
        list(iter_shard(tmp_path / "link.tar"))


def tarfile_members(path, mode="r:*"):
    with tarfile.open(path, mode) as t:
        return [(m.name, t.extractfile(m).read()) for m in t]


def test_fast_reader_agrees_with_tarfile_including_a_pax_member_mid_file(tmp_path):
    # write_shard's plain ustar headers are parsed without tarfile; a pax header (long name)
    # in the middle hands the rest of the file to tarfile, which must read on from there
    long = "k" * 120
    with tarfile.open(tmp_path / "mixed.tar", "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in [("000.jpg", b"a" * 700), ("000.json", b"{}"), (f"{long}.jpg", b"b" * 3),
                           (f"{long}.json", b"[]"), ("002.jpg", b"c" * 512), ("002.json", b"1")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    got = [(f"{k}.{e}", d) for k, parts in iter_shard(tmp_path / "mixed.tar") for e, d in parts.items()]
    assert got == tarfile_members(tmp_path / "mixed.tar")
    assert [k for k, _ in iter_shard(tmp_path / "mixed.tar")] == ["000", long, "002"]


def test_compressed_and_streamed_tars_are_read(tmp_path):
    samples = [Sample(f"{k:03d}", bytes([k]) * (100 + k), meta={"labels": [k]}) for k in range(4)]
    write_shard(tmp_path / "a.tar", samples)
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as t:
        for name, data in tarfile_members(tmp_path / "a.tar"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    plain = list(iter_shard(tmp_path / "a.tar"))
    assert list(iter_shard(tmp_path / "a.tar.gz")) == plain
    assert list(iter_shard("stream", fileobj=io.BytesIO((tmp_path / "a.tar").read_bytes()))) == plain
    assert [p["jpg"] for _, p in plain] == [s.image for s in samples]


@pytest.mark.parametrize("cut", [100, 512 + 50, 2048 + 700])
def test_truncated_shard_is_an_error_naming_it(tmp_path, cut):
    write_shard(tmp_path / "a.tar", [Sample(f"{k:03d}", b"x" * 1000, meta={}) for k in range(3)])
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:cut])
    with pytest.raises(ShardError, match=r"cut\.tar.*(truncated|damaged|unexpected end)"):
        list(iter_shard(tmp_path / "cut.tar"))


def test_damaged_header_is_an_error_naming_the_shard(tmp_path):
    write_shard(tmp_path / "a.tar", [Sample(f"{k:03d}", b"x" * 1000, meta={}) for k in range(3)])
    data = bytearray((tmp_path / "a.tar").read_bytes())
    data[2560 + 130] ^= 0x07  # the size field of the second sample's .jpg header: checksum no longer matches
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"bad\.tar"):
        list(iter_shard(tmp_path / "bad.tar"))
