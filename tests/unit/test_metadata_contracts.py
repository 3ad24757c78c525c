"""The two metadata files' owners (schemas/shard_set.py: shards.json; schemas/sample_index.py: a
sample index's index.json): what they write reads back the same, a file of another version is
refused by name, and every inconsistency is an error naming the file and what is wrong."""
import json
from dataclasses import replace

import pytest

from schemas.metadata import MetadataError
from schemas.sample_index import (SAMPLE_INDEX_VERSION, SampleIndexMeta, index_file, read_sample_index_meta,
                                  shard_set_sha256)
from schemas.shard_set import SHARD_SET_VERSION, ShardEntry, ShardSetMeta, read_shard_set_meta, shard_set_file

WHERE = "set/shards.json"


def shard_set() -> ShardSetMeta:
    return ShardSetMeta.numbered(5, [("shard-000000.tar", 3, 300, "a" * 64), ("shard-000001.tar", 2, 200, "b" * 64)],
                                 shard_size=3, max_side=64, quality=90, text="text",
                                 rejected_images={"decode_error": 1, "too_large": 0},
                                 ffcv={"file": "images.beton", "label_pad": 2, "images": 5})


def sample_index() -> SampleIndexMeta:
    return SampleIndexMeta(2, "c" * 64, (40, 38), (0, 2), "build/demo/shards", (7, 123456))


def test_shard_set_round_trip_and_numbering():
    meta = shard_set()
    assert [(s.first_image, s.images) for s in meta.shards] == [(0, 3), (3, 2)] and meta.images == 5
    assert ShardSetMeta.from_json(meta.to_json(), WHERE) == meta
    raw = json.loads(meta.to_json())
    assert raw["version"] == SHARD_SET_VERSION == 1
    assert raw["shards"][1] == {"name": "shard-000001.tar", "images": 2, "first_image": 3, "bytes": 200,
                                "sha256": "b" * 64}
    bare = ShardSetMeta.numbered(5, [("shard-000000.tar", 5, 10, "")])  # settings unknown: null
    assert ShardSetMeta.from_json(bare.to_json(), WHERE) == bare


def test_shard_set_without_version_key_is_version_1(tmp_path):
    raw = json.loads(shard_set().to_json())
    del raw["version"], raw["ffcv"], raw["text"]  # as jobs/shards.py wrote it before the key existed
    shard_set_file(tmp_path).write_text(json.dumps(raw))
    meta = read_shard_set_meta(tmp_path)
    assert meta.version == 1 and meta.ffcv is None and meta.text is None and meta.shards == shard_set().shards


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_another_version_is_refused_by_name(tmp_path, version):
    for write, read, kind, ours in (
            (shard_set, read_shard_set_meta, "shard set", SHARD_SET_VERSION),
            (sample_index, read_sample_index_meta, "sample index", SAMPLE_INDEX_VERSION)):
        path = shard_set_file(tmp_path) if kind == "shard set" else index_file(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**json.loads(write().to_json()), "version": version}))
        with pytest.raises(MetadataError) as e:
            read(tmp_path)
        assert str(e.value).startswith(f"{path}: {kind} version {version!r}; this code reads version {ours}"), e.value


def entries(*shards) -> tuple[ShardEntry, ...]:
    return tuple(ShardEntry(*s) for s in shards)


@pytest.mark.parametrize("change, message", [
    (dict(shards=entries(("shard-000000.tar", 3, 0, 1), ("shard-000001.tar", 0, 3, 1))),
     "set/shards.json: shard shard-000001.tar lists 0 images (an empty shard"),
    (dict(shards=entries(("../evil.tar", 3, 0, 1), ("shard-000001.tar", 2, 3, 1))),
     "set/shards.json: bad shard name '../evil.tar'"),
    (dict(shards=entries(("shard-000000.tar", 3, 0, 1), ("..", 2, 3, 1))), "set/shards.json: bad shard name '..'"),
    (dict(shards=entries(("shard-000000.tar", 3, 0, 1), ("shard-000001.tar", 2, 4, 1))),
     "set/shards.json: shard shard-000001.tar starts at image 4, expected 3"),
    (dict(images=6), "set/shards.json: shard images sum to 5, not 6"),
])
def test_inconsistent_shard_sets_are_refused(change, message):
    text = replace(shard_set(), **change).to_json()  # built freely: only reading checks
    with pytest.raises(MetadataError) as e:
        ShardSetMeta.from_json(text, WHERE)
    assert str(e.value).startswith(message), e.value


@pytest.mark.parametrize("edit, missing", [
    (lambda r: r.pop("num_classes"), "num_classes"), (lambda r: r.pop("shards"), "shards"),
    (lambda r: r["shards"][0].pop("first_image"), "first_image"), (lambda r: r.update(images="many"), "many"),
    (lambda r: r.update(shards=None), "NoneType")])
def test_shard_set_missing_or_mistyped_keys_are_named(edit, missing):
    raw = json.loads(shard_set().to_json())
    edit(raw)
    with pytest.raises(MetadataError, match=r"set/shards\.json is unreadable or lacks num_classes/images/shards") as e:
        ShardSetMeta.from_json(json.dumps(raw), WHERE)
    assert missing in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("{not json", "set/shards.json is not JSON"), ("[1, 2]", "set/shards.json: expected a JSON object, found list")])
def test_not_a_json_object_is_named(text, message):
    with pytest.raises(MetadataError, match=message):
        ShardSetMeta.from_json(text, WHERE)


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(MetadataError, match=rf"{shard_set_file(tmp_path)} is unreadable"):
        read_shard_set_meta(tmp_path)
    with pytest.raises(MetadataError, match=rf"{index_file(tmp_path)} is unreadable"):
        read_sample_index_meta(tmp_path)


def test_sample_index_round_trip_and_binding(tmp_path):
    meta = sample_index()
    index_file(tmp_path).parent.mkdir()
    index_file(tmp_path).write_text(meta.to_json())
    assert read_sample_index_meta(tmp_path) == meta
    assert json.loads(meta.to_json()) == {"version": 1, "epochs": 2, "shards_sha256": "c" * 64, "samples": [40, 38],
                                          "rejected_samples": [0, 2], "shards": "build/demo/shards",
                                          "seeds": [7, 123456]}
    text = shard_set().to_json()  # one digest of a shard set's bytes, whether read as bytes or as text
    assert shard_set_sha256(text) == shard_set_sha256(text.encode())
    bound = replace(meta, shards_sha256=shard_set_sha256(text))
    assert bound.bound_to(text.encode()) and not bound.bound_to(text + " ")
    bare = SampleIndexMeta(1, "d" * 64, (5,), (0,))  # no path, no seeds (tests' indices): null
    assert SampleIndexMeta.from_json(bare.to_json(), "i.json") == bare
    raw = json.loads(bare.to_json())
    del raw["version"]
    assert SampleIndexMeta.from_json(json.dumps(raw), "i.json") == bare  # no version key: version 1


@pytest.mark.parametrize("change, message", [
    (dict(epochs=0), "i.json: epochs is 0, expected >= 1"),
    (dict(samples=(40,)), "i.json: samples lists 1 epochs, epochs is 2"),
    (dict(rejected_samples=(0, 0, 0)), "i.json: rejected_samples lists 3 epochs, epochs is 2"),
    (dict(seeds=(1,)), "i.json: seeds lists 1 epochs, epochs is 2"),
])
def test_inconsistent_sample_indices_are_refused(change, message):
    with pytest.raises(MetadataError) as e:
        SampleIndexMeta.from_json(replace(sample_index(), **change).to_json(), "i.json")
    assert str(e.value).startswith(message), e.value


@pytest.mark.parametrize("key", ["epochs", "shards_sha256", "samples", "rejected_samples"])
def test_sample_index_missing_keys_are_named(key):
    raw = json.loads(sample_index().to_json())
    del raw[key]
    with pytest.raises(MetadataError, match="i.json is unreadable or lacks epochs/shards_sha256/samples/") as e:
        SampleIndexMeta.from_json(json.dumps(raw), "i.json")
    assert key in str(e.value)
