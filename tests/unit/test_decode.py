"""One image decoder: transfer images are decoded by the shards' rules (pipeline/images.py), and an
image it refuses is an error naming the file."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.images import ALLOWED_FORMATS, IMAGE_SUFFIXES, ImageRejected, decode_rgb, prepare_image
from pipeline.wds import Sample, write_shard
from transfer.downstream import ImageSet, image_tensor, load_split


def encode(im, fmt="PNG", **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def bomb_png(w=30000, h=30000):
    """A tiny PNG whose header claims w x h pixels: over Pillow's decompression-bomb limit."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def folder(root, files: dict):
    """ROOT/{train,val}/a/<name> for each (name, bytes), plus one good image per split."""
    good = encode(Image.new("RGB", (12, 10), (200, 30, 30)), "JPEG")
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        (root / split / "a" / "0good.jpg").write_bytes(good)
        for name, data in files.items():
            (root / split / "a" / name).write_bytes(data)
    return root


def item(root, name):
    split = load_split(root, "val")
    i = next(i for i in range(len(split)) if split.name(i).endswith(name))
    return ImageSet(split, 8)[i]


def test_one_allow_list():
    assert set(IMAGE_SUFFIXES.values()) == set(ALLOWED_FORMATS)
    assert ".png" in IMAGE_SUFFIXES and ".eps" not in IMAGE_SUFFIXES and ".pdf" not in IMAGE_SUFFIXES


def test_transfer_refuses_a_format_outside_the_allow_list_naming_the_file(tmp_path):
    # an ICO (a format Pillow reads, not on the allow-list) under an image suffix
    ico = encode(Image.new("RGB", (16, 16), (0, 0, 255)), "ICO")
    root = folder(tmp_path / "d", {"icon.png": ico, "notes.txt": b"not an image"})
    assert load_split(root, "val").skipped == 1  # the .txt: not an image suffix
    with pytest.raises(ValueError, match=r"/val/a/icon\.png: unsupported_format: ICO"):
        item(root, "icon.png")
    assert item(root, "0good.jpg")[0].shape == (3, 8, 8)


def test_transfer_refuses_a_decompression_bomb_naming_the_file(tmp_path):
    root = folder(tmp_path / "d", {"bomb.png": bomb_png()})
    with pytest.raises(ValueError, match=r"/val/a/bomb\.png: too_large"):
        item(root, "bomb.png")


def test_transfer_refuses_a_bad_shard_member_naming_shard_and_key(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        write_shard(tmp_path / split / "shard-000000.tar", [
            Sample("k0", encode(Image.new("RGB", (9, 9)), "JPEG"), cls=0),
            Sample("k1", b"<html>404</html>", cls=0, image_ext="png")])
    split = load_split(tmp_path, "val")
    assert len(split) == 2
    with pytest.raises(ValueError, match=r"shard-000000\.tar:k1: undecodable"):
        ImageSet(split, 8)[1]


def test_transfer_pixels_follow_the_shard_rules(tmp_path):
    """EXIF orientation and transparency on white, as the shards have them (references by Pillow
    and numpy, not by our decoder)."""
    a = np.zeros((20, 30, 3), np.uint8)
    a[:, :15] = (255, 0, 0)
    a[:, 15:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(Image.fromarray(a), "PNG", exif=exif)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = np.arange(16, dtype=np.uint8)[None, :] * 17  # alpha 0..255 across
    root = folder(tmp_path / "d", {"rot.png": rotated, "alpha.png": encode(Image.fromarray(rgba, "RGBA"))})
    split = load_split(root, "val")
    got = {split.name(i).rsplit("/", 1)[1]: image_tensor(split.sources[i].read_bytes(), split.name(i))
           for i in range(len(split))}
    ref = np.array(ImageOps.exif_transpose(Image.open(io.BytesIO(rotated))).convert("RGB"))
    assert ref.shape == (30, 20, 3) and torch.equal(got["rot.png"], torch.from_numpy(ref).permute(2, 0, 1))
    alpha = rgba[..., 3:4] / 255.0
    on_white = rgba[..., :3] * alpha + 255 * (1 - alpha)
    assert np.abs(got["alpha.png"].permute(1, 2, 0).numpy().astype(float) - on_white).max() <= 1.0


def test_rejections_name_their_source_and_keep_the_reason():
    with pytest.raises(ImageRejected) as e:
        decode_rgb(b"", source="some/file.jpg")
    assert e.value.reason == "undecodable" and e.value.source == "some/file.jpg"
    assert str(e.value) == "some/file.jpg: undecodable: zero bytes"
    with pytest.raises(ImageRejected, match="^undecodable"):
        prepare_image(b"<html></html>")  # no source given: the message is the reason, as before
    big = encode(Image.new("RGB", (40, 20)), "PNG")
    assert decode_rgb(big).size == (40, 20) and decode_rgb(big, max_side=10).size == (20, 10)
    with pytest.raises(ImageRejected, match="too_large"):
        decode_rgb(big, max_pixels=100, source="x")
