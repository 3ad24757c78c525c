"""Image preparation on a hand-made set of real-world bad and awkward images."""
import io
import zlib
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.images import ImageRejected, ImageSpec, prepare_image, read_image_bytes


def encode(im, fmt="PNG", **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def decoded(jpeg):
    im = Image.open(io.BytesIO(jpeg))
    assert im.format == "JPEG"
    return np.asarray(im.convert("RGB"), dtype=np.int32)


def quadrants():
    """60x40 image, distinct colours per quadrant: any flip or rotation is visible."""
    a = np.zeros((40, 60, 3), np.uint8)
    a[:20, :30] = (255, 0, 0)
    a[:20, 30:] = (0, 255, 0)
    a[20:, :30] = (0, 0, 255)
    a[20:, 30:] = (255, 255, 0)
    return Image.fromarray(a)


def reject_reason(data, spec=ImageSpec()):
    with pytest.raises(ImageRejected) as e:
        prepare_image(data, spec)
    return e.value.reason


def png_header_only(w, h):
    """A tiny valid-looking PNG claiming w x h pixels (a decompression bomb's header)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_rejects_by_reason(tmp_path):
    good_jpeg = encode(quadrants(), "JPEG")
    good_png = encode(quadrants(), "PNG")
    assert reject_reason(b"") == "undecodable"
    assert reject_reason(b"<html><body>404 Not Found</body></html>") == "undecodable"
    assert reject_reason(good_jpeg[: len(good_jpeg) // 2]) == "truncated"
    assert reject_reason(good_png[: len(good_png) - 30]) in ("truncated", "undecodable")
    assert reject_reason(png_header_only(30000, 30000)) == "too_large"  # Pillow's guard
    assert reject_reason(good_png, ImageSpec(max_pixels=1000)) == "too_large"  # our lower limit
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert reject_reason(eps) == "unsupported_format"
    with pytest.raises(ImageRejected) as e:
        read_image_bytes(str(tmp_path / "nope.jpg"))
    assert e.value.reason == "missing_file"
    with pytest.raises(ImageRejected) as e:
        read_image_bytes("nope.jpg", image_root=str(tmp_path))
    assert e.value.reason == "missing_file" and "nope.jpg" in str(e.value)


def test_truncated_png_body_is_truncated():
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = encode(noisy, "PNG")
    assert reject_reason(data[: len(data) // 2]) == "truncated"


def test_read_bytes_paths_and_uris(tmp_path):
    p = tmp_path / "a b.png"
    p.write_bytes(b"xyz")
    assert read_image_bytes(str(p)) == b"xyz"
    assert read_image_bytes("a b.png", image_root=str(tmp_path)) == b"xyz"
    assert read_image_bytes(p.as_uri()) == b"xyz"
    assert read_image_bytes(b"raw") == b"raw"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation):
    shown = quadrants()
    inverse = {1: [], 2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
               4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
               6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_270]}
    stored = shown
    for op in inverse[orientation]:
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", exif=exif, quality=95)
    # Pillow's own exif_transpose recovers the picture: the reference is independent of our code
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"), np.int32)
    assert ref.shape == (40, 60, 3)
    out = decoded(prepare_image(data)[0])
    assert out.shape == (40, 60, 3)
    for y, x, colour in ((10, 15, (255, 0, 0)), (10, 45, (0, 255, 0)), (30, 15, (0, 0, 255)), (30, 45, (255, 255, 0))):
        assert np.abs(out[y, x] - colour).max() < 40, (orientation, y, x, out[y, x])


def test_modes_become_rgb_with_white_behind_transparency():
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    assert decoded(prepare_image(encode(rgba))[0])[10, 10].min() > 245  # white
    la = Image.new("LA", (20, 20), (0, 255))  # opaque black
    assert decoded(prepare_image(encode(la))[0])[10, 10].max() < 10
    p = Image.new("P", (20, 20), 0)
    p.putpalette([0, 0, 255] + [0] * 765)
    p.info["transparency"] = 0
    assert decoded(prepare_image(encode(p, transparency=0))[0])[10, 10].min() > 245
    gray = Image.new("L", (20, 20), 128)
    assert abs(decoded(prepare_image(encode(gray))[0])[10, 10] - 128).max() < 4
    i16 = Image.fromarray(np.full((20, 20), 32768, np.uint16))  # mid-grey in 16 bits, not white
    assert i16.mode.startswith("I;16")
    assert abs(decoded(prepare_image(encode(i16))[0])[10, 10] - 128).max() < 4


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (30, 30), (0, 255, 255, 0))  # red in CMYK
    out = decoded(prepare_image(encode(cmyk, "JPEG"))[0])[15, 15]
    assert out[0] > 200 and out[1] < 60 and out[2] < 60


def test_resize_keeps_aspect_and_never_upscales():
    big = Image.new("RGB", (1000, 500), (10, 20, 30))
    jpeg, w, h = prepare_image(encode(big, "JPEG"), ImageSpec(max_side=100))
    assert (w, h) == (200, 100) and Image.open(io.BytesIO(jpeg)).size == (200, 100)
    small = Image.new("RGB", (50, 80))
    assert prepare_image(encode(small), ImageSpec(max_side=100))[1:] == (50, 80)
    huge_png = Image.new("RGBA", (4000, 3000), (0, 0, 0, 255))
    assert prepare_image(encode(huge_png), ImageSpec(max_side=64))[1:] == (85, 64)
