"""Damaged and unsafe shards and impossible layouts (issue 16, items 18, 19, 21, 22): the real WebDataset reader refuses
them with an error naming the shard, the member or key, and why."""
import io
import tarfile
from dataclasses import replace

import pytest

from pipeline.wds import Sample, ShardError, shard_name
from schemas.shard_set import ShardEntry, read_shard_set_meta
from tests.helpers.readerkit import SIZE, add_member, jpeg_of, labels_of, make_shards
from tests.helpers.shardkit import restate_shard, write_meta
from trainer.data import wds_loader


def test_too_few_shards_for_ranks_and_workers(shards8):
    with pytest.raises(ValueError, match=r"5 shards cannot feed 6 readers"):
        wds_loader(shards8, batch_size=2, rank=0, world_size=3, num_workers=2, train=True, size=SIZE)
    with pytest.raises(ValueError, match="no full batch"):
        wds_loader(shards8, batch_size=10, rank=0, world_size=4, num_workers=0, train=True, size=SIZE)
    with pytest.raises(ValueError, match="rank 2 outside"):
        wds_loader(shards8, batch_size=2, rank=2, world_size=2, num_workers=0, train=True, size=SIZE)


def test_index_of_other_shards_is_refused(shards4, shards8, indexed):
    samples, _ = indexed
    with pytest.raises(ShardError, match="bound to another shard set"):
        wds_loader(shards8, batch_size=2, rank=0, world_size=1, num_workers=0, train=True, size=SIZE,
                   sample_index=samples)


@pytest.mark.parametrize("name, kind, reason, workers", [
    ("000000000005.pyd", tarfile.REGTYPE, "refusing pickle member", 2),
    ("000000000006.pkl", tarfile.REGTYPE, "refusing pickle member", 0),
    ("../evil.jpg", tarfile.REGTYPE, "unsafe path", 0),
    ("/etc/evil.jpg", tarfile.REGTYPE, "unsafe path", 0),
    ("000000000007.jpg", tarfile.SYMTYPE, "non-file tar member", 0)])
def test_unsafe_members_are_refused(tmp_path, name, kind, reason, workers):
    root = make_shards(tmp_path / "bad", 4, n=8)
    add_member(root, 1, name, b"not for reading", kind)
    loader = wds_loader(root, batch_size=1, rank=0, world_size=1, num_workers=workers, train=False, size=SIZE)
    with pytest.raises(ShardError) as e:
        list(loader)
    message = str(e.value)  # the shard, the member and why, not just any error of that shard
    assert "shard-000001.tar" in message and repr(name) in message and reason in message, message


def replace_shard(root, shard, members):
    """Shard `shard` of a finished set rewritten with (name, data) tar members in that order;
    shards.json keeps its image count and learns the new byte count."""
    path = root / shard_name(shard)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    restate_shard(root, shard)


def sample_members(k: int) -> dict[str, tuple[str, bytes]]:
    """Stored image k's tar members as the shard writer writes them, by extension."""
    return dict(zip(("jpg", "json"), Sample(f"{k:012d}", jpeg_of(k), meta={"labels": labels_of(k)}).members()))


@pytest.mark.parametrize("order, key, found", [
    (["4.jpg", "5.jpg", "4.json", "5.json", "6.jpg", "6.json", "7.jpg", "7.json"], 4, "['jpg']"),  # not side by side
    (["4.jpg", "4.json", "5.jpg", "6.jpg", "6.json", "7.jpg", "7.json"], 5, "['jpg']"),  # 5 has no .json
    (["4.jpg", "4.json", "5.json", "5.jpg", "5.txt", "6.jpg", "6.json", "7.jpg", "7.json"], 5, "['jpg', 'json', 'txt']")])
def test_bad_key_layout_names_the_shard_and_the_key(tmp_path, order, key, found):
    root = make_shards(tmp_path / "s", 4, n=8)
    key_name = lambda k: f"{k:012d}"  # noqa: E731  (the shard writer's keys: the image's number)
    members = [sample_members(int(k)).get(ext, (f"{key_name(int(k))}.{ext}", b"a stray member"))
               for k, ext in (m.split(".") for m in order)]
    replace_shard(root, 1, members)
    loader = wds_loader(root, batch_size=1, rank=0, world_size=1, num_workers=0, train=False, size=SIZE)
    with pytest.raises(ShardError) as e:
        list(loader)
    message = str(e.value)
    assert f"shard-000001.tar:{key_name(key)}: expected members .jpg and .json, found {found}" in message, message


def test_a_key_that_comes_back_later_is_named(tmp_path):
    root = make_shards(tmp_path / "s", 4, n=8)
    members = [sample_members(k)[ext] for k, ext in ((4, "jpg"), (4, "json"), (5, "jpg"), (5, "json"), (4, "jpg"),
                                                      (4, "json"), (7, "jpg"), (7, "json"))]
    replace_shard(root, 1, members)
    loader = wds_loader(root, batch_size=1, rank=0, world_size=1, num_workers=0, train=False, size=SIZE)
    with pytest.raises(ShardError, match=r"shard-000001\.tar:000000000004: the key's members are not side by side"):
        list(loader)


def test_empty_shards_are_refused(tmp_path):
    kw = dict(batch_size=1, rank=0, world_size=1, num_workers=0, train=True, size=SIZE)
    root = make_shards(tmp_path / "listed", 4, n=8)
    meta = read_shard_set_meta(root)
    write_meta(root, replace(meta, shards=(*meta.shards, ShardEntry(shard_name(2), 0, 8, 0, ""))))
    (root / shard_name(2)).write_bytes(b"")
    with pytest.raises(ShardError, match=r"shard shard-000002\.tar lists 0 images"):  # listed as empty
        wds_loader(root, **kw)
    root = make_shards(tmp_path / "file", 4, n=8)
    size = (root / shard_name(1)).stat().st_size
    (root / shard_name(1)).write_bytes(b"")  # emptied after the job: refused before anything is read
    with pytest.raises(ShardError, match=rf"shard-000001\.tar: missing, or not the {size} bytes"):
        wds_loader(root, **kw)
    replace_shard(root, 1, [])  # an empty tar, with shards.json's byte count made to fit: refused on reading it
    loader = wds_loader(root, **kw)
    with pytest.raises(ShardError, match=r"shard-000001\.tar: holds 0 images, shards.json says 4"):
        list(loader)
