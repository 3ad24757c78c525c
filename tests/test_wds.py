"""Tar shard writing is deterministic and atomic; unsafe members are refused."""
import io
import tarfile

import pytest

from pipeline.wds import ShardError, iter_shard, write_shard


def test_write_read_back_and_deterministic_bytes(tmp_path):
    samples = [(f"{k:09d}", bytes([k]) * 10, {"labels": [k], "position": k}) for k in range(5)]
    a = write_shard(tmp_path / "a.tar", samples)
    b = write_shard(tmp_path / "b.tar", samples)
    assert a == b and a["samples"] == 5
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    got = list(iter_shard(tmp_path / "a.tar"))
    assert [k for k, _ in got] == [s[0] for s in samples]
    assert got[3][1]["jpg"] == bytes([3]) * 10 and b'"labels": [3]' in got[3][1]["json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield "000000000", b"x", {}
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
