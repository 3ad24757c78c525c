"""The tar sample's one owner (pipeline/wds.py): write then read back, and each kind of damage with
the outcome its module docstring promises (structural damage always an error naming shard:key;
an undecodable image or a cls sample without an image the handler's: counted and named, or raised)."""
import io
import logging
import tarfile

import numpy as np
import pytest
from PIL import Image

from pipeline.tar_members import add_member
from pipeline.wds import (HANDLED, STRUCTURAL, Sample, SampleError, ShardError, Skips, decode, iter_shard,
                          locate_samples, parse_sample, read_located, read_samples, stop, write_shard)
from tests.helpers.images import png_header_only


def jpeg(colour=(200, 30, 30), size=(12, 10)) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, colour).save(b, "JPEG", quality=95)
    return b.getvalue()


def raw_tar(path, members):
    """A tar of (name, bytes) members exactly as given: damage the writer would never make."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            add_member(tar, name, data)
    return path


def json_members(meta=b'{"labels": [1]}', image=None):
    return {"jpg": jpeg() if image is None else image, "json": meta}


def test_write_then_read_back_both_layouts(tmp_path):
    samples = [Sample(f"{k:03d}", jpeg((k * 40, 0, 0)), meta={"image_id": f"im{k}", "labels": [k, 2], "tail": False,
                                                                  "text": f"text {k}"}) for k in range(4)]
    rec = write_shard(tmp_path / "a.tar", samples)
    assert rec["samples"] == 4 and write_shard(tmp_path / "b.tar", samples) == rec  # deterministic bytes
    back = list(read_samples(tmp_path / "a.tar", num_classes=4))
    assert back == samples and back[2].where == f"{tmp_path / 'a.tar'}:002"
    assert (back[3].labels, back[3].text, back[3].image_id) == ([3, 2], "text 3", "im3")
    cls = [Sample("a0", jpeg(), cls=2), Sample("a1", b"png bytes", cls=0, image_ext="png")]
    write_shard(tmp_path / "c.tar", cls)
    assert [(name, data) for s in cls for name, data in s.members()] == [
        ("a0.jpg", cls[0].image), ("a0.cls", b"2"), ("a1.png", b"png bytes"), ("a1.cls", b"0")]
    assert list(read_samples(tmp_path / "c.tar", "cls", num_classes=3)) == cls
    with tarfile.open(tmp_path / "a.tar") as t:  # what any tar reader sees: key.jpg, key.json, in order
        assert t.getnames()[:2] == ["000.jpg", "000.json"]
        assert t.extractfile("000.json").read() == b'{"image_id": "im0", "labels": [0, 2], "tail": false, ' \
                                                   b'"text": "text 0"}'


@pytest.mark.parametrize("members, reason, message", [
    ({"jpg": jpeg()}, "members", r"expected members \.jpg and \.json, found \['jpg'\]"),
    ({"json": b'{"labels": [1]}'}, "members", r"found \['json'\]"),
    ({**json_members(), "txt": b"x"}, "members", r"found \['jpg', 'json', 'txt'\]"),
    (json_members(meta=b"{not json"), "meta", "bad metadata: JSONDecodeError"),
    (json_members(meta=b"\xff\xfe"), "meta", "bad metadata"),
    (json_members(meta=b"[1, 2]"), "meta", "not a JSON object but list"),
    (json_members(meta=b'{"image_id": "a"}'), "meta", "labels must be a list of integers, got None"),
    (json_members(meta=b'{"labels": ["1"]}'), "meta", "labels must be a list of integers"),
    (json_members(meta=b'{"labels": [1.5]}'), "meta", "labels must be a list of integers"),
    (json_members(meta=b'{"labels": [true]}'), "meta", "labels must be a list of integers"),
    (json_members(meta=b'{"labels": 1}'), "meta", "labels must be a list of integers"),
    (json_members(meta=b'{"labels": [1], "text": 5}'), "meta", "text must be a string, got int"),
    (json_members(meta=b'{"labels": [1], "image_id": null}'), "meta", "image_id must be a string"),
    (json_members(meta=b'{"labels": []}'), "labels", r"labels \[\] empty or outside \[0, 4\)"),
    (json_members(meta=b'{"labels": [1, 4]}'), "labels", r"labels \[1, 4\] empty or outside \[0, 4\)"),
    (json_members(meta=b'{"labels": [-1]}'), "labels", r"labels \[-1\] empty or outside"),
])
def test_json_sample_damage_is_structural(members, reason, message):
    with pytest.raises(SampleError, match=r"^s\.tar:k: .*" + message) as e:
        parse_sample("k", members, "s.tar:k", num_classes=4)
    assert e.value.reason == reason and reason in STRUCTURAL


def test_labels_are_range_checked_only_against_a_known_class_count():
    sample = parse_sample("k", json_members(meta=b'{"labels": [7, 9]}'), "s.tar:k")
    assert sample.labels == [7, 9] and sample.text == "" and sample.image_id == "k"
    with pytest.raises(SampleError, match=r"labels \[7, 9\] empty or outside \[0, 8\)"):
        parse_sample("k", json_members(meta=b'{"labels": [7, 9]}'), "s.tar:k", num_classes=8)


@pytest.mark.parametrize("members, reason, message", [
    ({"jpg": jpeg()}, "members", r"no \.cls member"),
    ({"jpg": jpeg(), "cls": b"three"}, "meta", r"\.cls is not an integer: b'three'"),
    ({"jpg": jpeg(), "cls": b"\xff"}, "meta", r"\.cls is not an integer"),
    ({"jpg": jpeg(), "cls": b"3"}, "labels", r"class 3 outside \[0, 3\)"),
    ({"jpg": jpeg(), "cls": b"-1"}, "labels", r"class -1 outside \[0, 3\)"),
    ({"txt": b"a caption", "cls": b"1"}, "no_image", r"no image member beside its \.cls"),
])
def test_cls_sample_damage(members, reason, message):
    with pytest.raises(SampleError, match=r"^s\.tar:k: .*" + message) as e:
        parse_sample("k", members, "s.tar:k", "cls", num_classes=3)
    assert e.value.reason == reason


def test_cls_sample_takes_its_first_image_member_and_ignores_others():
    s = parse_sample("k", {"txt": b"x", "png": b"p", "jpg": b"j", "cls": b" 2\n"}, "s.tar:k", "cls")
    assert (s.image, s.image_ext, s.cls) == (b"j", "jpg", 2)


def test_handled_damage_goes_to_the_handler_structural_damage_never_does(tmp_path):
    path = raw_tar(tmp_path / "s.tar", [("a.jpg", jpeg()), ("a.cls", b"0"), ("b.txt", b"no image"), ("b.cls", b"1"),
                                        ("c.png", b"png"), ("c.cls", b"1")])
    skips = Skips(warn=False)
    assert [s.key for s in read_samples(path, "cls", handler=skips)] == ["a", "c"]
    assert skips.names == [f"{path}:b: no image member beside its .cls (found ['cls', 'txt'])"]
    assert skips.by_reason == {"no_image": 1} and len(skips) == 1
    with pytest.raises(SampleError, match=r"s\.tar:b: no image member"):
        list(read_samples(path, "cls", handler=stop))
    broken = raw_tar(tmp_path / "j.tar", [("a.jpg", jpeg()), ("a.json", b'{"labels": [0]}'), ("b.jpg", jpeg())])
    with pytest.raises(SampleError, match=r"j\.tar:b: expected members"):  # a Skips does not skip it
        list(read_samples(broken, handler=skips))
    assert len(skips) == 1


def test_keys_not_side_by_side_and_members_twice_are_named(tmp_path):
    split = raw_tar(tmp_path / "split.tar", [("a.jpg", b"1"), ("b.jpg", b"2"), ("a.json", b"{}")])
    with pytest.raises(SampleError, match=r"split\.tar:a: the key's members are not side by side") as e:
        list(iter_shard(split))
    assert e.value.reason == "members"
    twice = raw_tar(tmp_path / "twice.tar", [("a.jpg", b"1"), ("a.jpg", b"2"), ("a.json", b"{}")])
    with pytest.raises(SampleError, match=r"twice\.tar:a: member 'a\.jpg' appears twice"):
        list(iter_shard(twice))


def test_decode_is_the_images_decoder_and_its_refusals_go_to_the_handler(tmp_path, caplog):
    good = Sample("g", jpeg((10, 120, 200), (14, 9)), meta={"labels": [0]}, where="s.tar:g")
    reference = np.array(Image.open(io.BytesIO(good.image)).convert("RGB"))  # Pillow, not our decoder
    pixels = decode(good, stop)
    assert pixels.dtype == np.uint8 and pixels.shape == (9, 14, 3) and np.array_equal(pixels, reference)
    bad = [Sample("h", b"<html>404</html>", meta={"labels": [0]}, where="s.tar:h"),
           Sample("t", good.image[: len(good.image) // 2], meta={"labels": [0]}, where="s.tar:t"),
           Sample("b", png_header_only(30000, 30000), meta={"labels": [0]}, where="s.tar:b")]
    skips = Skips(warn=False)
    assert [decode(s, skips) for s in bad] == [None, None, None]
    assert skips.by_reason == {"image": 3} and "image" in HANDLED
    assert skips.names[0] == "s.tar:h: cannot decode image: undecodable: not a recognised image"
    assert skips.names[1].startswith("s.tar:t: cannot decode image: truncated")
    assert skips.names[2].startswith("s.tar:b: cannot decode image: too_large")  # Pillow's bomb guard, kept
    with pytest.raises(SampleError, match=r"^s\.tar:h: cannot decode image: undecodable") as e:
        decode(bad[0], stop)
    assert isinstance(e.value, ShardError) and e.value.reason == "image"
    with caplog.at_level(logging.WARNING, logger="wds"):
        assert decode(bad[0]) is None  # the default handler: skipped, and said so
    assert "skipped a sample: s.tar:h: cannot decode image" in caplog.text


def test_a_sample_error_survives_being_rebuilt_from_its_message():
    # DataLoader workers re-raise an error as type(e)(message): the type must survive it
    e = SampleError("s.tar:k: bad metadata: x", "meta")
    again = type(e)(str(e))
    assert isinstance(again, ShardError) and str(again) == str(e)


def test_located_samples_read_back_as_the_stream_reads_them(tmp_path):
    samples = [Sample(f"{k:03d}", jpeg((k, k, k)), meta={"labels": [k]}) for k in range(5)]
    write_shard(tmp_path / "a.tar", samples)
    located = locate_samples(tmp_path / "a.tar")
    assert [k for k, _ in located] == [s.key for s in samples] and set(located[0][1]) == {"jpg", "json"}
    assert [read_located(tmp_path / "a.tar", k, spans) for k, spans in located] == list(read_samples(tmp_path / "a.tar"))


def test_samples_the_writer_would_not_read_back_are_refused():
    with pytest.raises(ValueError, match="holding a '.'"):
        Sample("a.b", b"x", meta={"labels": [0]})
    with pytest.raises(ValueError, match="empty"):
        Sample("", b"x", meta={"labels": [0]})
    with pytest.raises(ValueError, match="one of them"):
        Sample("a", b"x", meta={"labels": [0]}, cls=1)
    with pytest.raises(ValueError, match="one of them"):
        Sample("a", b"x")
    with pytest.raises(ValueError, match=r"layout json takes \.jpg"):
        Sample("a", b"x", meta={"labels": [0]}, image_ext="png")
    with pytest.raises(ValueError, match="unknown sample layout 'txt'; valid: json, cls"):
        next(read_samples("x.tar", "txt"))
