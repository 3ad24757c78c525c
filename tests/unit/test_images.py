"""Image preparation on a hand-made set of real-world bad and awkward images."""
import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.image_reader import read_image
from pipeline.images import ImageRejected, ImageSpec, decode_rgb, prepare_image
from tests.helpers.images import encode, png_header_only, quadrants, truncated_jpegs


def decoded(jpeg):
    im = Image.open(io.BytesIO(jpeg))
    assert im.format == "JPEG"
    return np.asarray(im.convert("RGB"), dtype=np.int32)


def reject_reason(data, spec=ImageSpec()):
    with pytest.raises(ImageRejected) as e:
        prepare_image(data, spec)
    return e.value.reason


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
        read_image(str(tmp_path / "nope.jpg"))
    assert e.value.reason == "missing_file"
    with pytest.raises(ImageRejected) as e:
        read_image("nope.jpg", image_root=str(tmp_path))
    assert e.value.reason == "missing_file" and "nope.jpg" in str(e.value)


def test_truncated_png_body_is_truncated():
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = encode(noisy, "PNG")
    assert reject_reason(data[: len(data) // 2]) == "truncated"


@pytest.mark.parametrize("max_side", [None, 32])  # full size and JPEG draft
def test_truncated_jpeg_scan_is_truncated(max_side):
    for name, data in truncated_jpegs().items():
        with pytest.raises(ImageRejected) as e:
            decode_rgb(data, max_side, source=name)
        assert e.value.reason == "truncated" and str(e.value).startswith(f"{name}: truncated"), name


def test_read_bytes_paths_and_uris(tmp_path):
    p = tmp_path / "a b.png"
    p.write_bytes(b"xyz")
    assert read_image(str(p)) == b"xyz"
    assert read_image("a b.png", image_root=str(tmp_path)) == b"xyz"
    assert read_image(p.as_uri()) == b"xyz"
    assert read_image(b"raw") == b"raw"


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


# ---- colour: CMYK and ICC profiles against independent references (issue 16, item 5) ----------

def _cmyk_to_rgb(c, m, y, k):
    """The CMYK -> RGB of an untagged CMYK image: (255 - ink) x (255 - k) / 255."""
    return np.array([(255 - v) * (255 - k) / 255 for v in (c, m, y)])


def _strip_adobe_marker(jpeg: bytes) -> bytes:
    i = jpeg.index(b"\xff\xee")
    n = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
    assert jpeg[i + 4:i + 9] == b"Adobe"
    return jpeg[:i] + jpeg[i + 2 + n:]


CMYK_COLOURS = [(30, 160, 220, 40), (200, 20, 90, 10), (0, 0, 0, 200), (120, 120, 0, 0)]


def test_cmyk_jpegs_adobe_inverted_and_plain():
    """A flat patch per colour. Pillow writes CMYK JPEGs the Photoshop way (inverted, with an Adobe
    APP14 marker); with the marker stripped from a file of inverted inks, the stored values are
    the plain inks. Both decode to the CMYK formula's RGB."""
    a = np.zeros((16, 16 * len(CMYK_COLOURS), 4), np.uint8)
    for i, c in enumerate(CMYK_COLOURS):
        a[:, 16 * i:16 * (i + 1)] = c
    adobe = encode(Image.fromarray(a, "CMYK"), "JPEG", quality=95)
    plain = _strip_adobe_marker(encode(Image.fromarray(255 - a, "CMYK"), "JPEG", quality=95))
    assert b"Adobe" in adobe and b"Adobe" not in plain
    for data in (adobe, plain):
        out = np.asarray(decode_rgb(data), np.int32)
        for i, c in enumerate(CMYK_COLOURS):
            assert np.abs(out[8, 16 * i + 8] - _cmyk_to_rgb(*c)).max() <= 3, (c, out[8, 16 * i + 8])


# An ICC v2 matrix/TRC profile built by hand, and its colours computed with numpy (Bradford-adapted
# to the D50 connection space): the reference does not come from LittleCMS.
D50 = np.array([0.9642, 1.0, 0.8249])
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
P3 = [(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)]
SRGB = [(0.64, 0.33), (0.30, 0.60), (0.15, 0.06)]
D65 = (0.3127, 0.3290)


def rgb_to_xyz_d50(primaries, white) -> np.ndarray:
    xy = np.array(primaries)
    m = np.stack([xy[:, 0] / xy[:, 1], np.ones(3), (1 - xy[:, 0] - xy[:, 1]) / xy[:, 1]])
    wp = np.array([white[0] / white[1], 1.0, (1 - white[0] - white[1]) / white[1]])
    m = m * np.linalg.solve(m, wp)
    adapt = np.linalg.inv(BRADFORD) @ np.diag((BRADFORD @ D50) / (BRADFORD @ wp)) @ BRADFORD
    return adapt @ m


def icc_profile(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    def s15(x):
        return struct.pack(">i", int(round(x * 65536)))
    text = b"test profile\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 79),
            (b"wtpt", b"XYZ \0\0\0\0" + b"".join(s15(v) for v in D50)), (b"cprt", b"text\0\0\0\0none\0"), *tags]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        body += b"\0" * (-(start + len(body)) % 4)
        table += sig + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (struct.pack(">I", start + len(body)) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntr" + space
              + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0" * 4 + b"".join(s15(v) for v in D50) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + body


def _xyz(v) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", int(round(x * 65536))) for x in v)


def _gamma(g: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, int(round(g * 256))) + b"\0\0"


def p3_profile(gamma=2.2) -> bytes:
    m = rgb_to_xyz_d50(P3, D65)
    return icc_profile(b"RGB ", [(b"rXYZ", _xyz(m[:, 0])), (b"gXYZ", _xyz(m[:, 1])), (b"bXYZ", _xyz(m[:, 2])),
                                 (b"rTRC", _gamma(gamma)), (b"gTRC", _gamma(gamma)), (b"bTRC", _gamma(gamma))])


def srgb_encode(lin: np.ndarray) -> np.ndarray:
    x = np.clip(lin, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055) * 255


def p3_to_srgb(rgb, gamma=2.2) -> np.ndarray:
    lin = (np.asarray(rgb, np.float64) / 255) ** (round(gamma * 256) / 256)  # the profile's u8.8 gamma
    return srgb_encode(np.linalg.solve(rgb_to_xyz_d50(SRGB, D65), rgb_to_xyz_d50(P3, D65) @ lin))


P3_COLOURS = [(200, 120, 60), (90, 160, 200), (128, 128, 128), (230, 200, 180), (60, 110, 70)]


def _patches(colours, mode="RGB") -> Image.Image:
    a = np.zeros((16, 16 * len(colours), len(colours[0])), np.uint8)
    for i, c in enumerate(colours):
        a[:, 16 * i:16 * (i + 1)] = c
    return Image.fromarray(a.squeeze(-1) if mode == "L" else a, mode)


def test_icc_profiled_images_are_converted_to_srgb():
    """Display-P3 primaries, gamma 2.2, in a PNG (iCCP) and a JPEG (APP2); and a linear grey profile."""
    prof = p3_profile()
    im = _patches(P3_COLOURS)
    for fmt, tol in (("PNG", 1.0), ("JPEG", 3.0)):
        out = np.asarray(decode_rgb(encode(im, fmt, icc_profile=prof, quality=95)), np.int32)
        for i, c in enumerate(P3_COLOURS):
            ref = p3_to_srgb(c)
            assert np.abs(out[8, 16 * i + 8] - ref).max() <= tol, (fmt, c, out[8, 16 * i + 8], ref)
    assert np.abs(p3_to_srgb(P3_COLOURS[0]) - P3_COLOURS[0]).max() > 10  # the profile matters
    grey = icc_profile(b"GRAY", [(b"kTRC", _gamma(1.0))])
    out = np.asarray(decode_rgb(encode(_patches([(40,), (128,), (220,)], "L"), icc_profile=grey)), np.int32)
    for i, v in enumerate((40, 128, 220)):
        assert np.abs(out[8, 16 * i + 8] - srgb_encode(np.array(v / 255))).max() <= 1.0, (v, out[8, 16 * i + 8])


def test_unusable_icc_profiles_are_ignored_not_fatal():
    """A damaged profile, or one for another colour space than the pixels': the pixels as sRGB."""
    im = _patches(P3_COLOURS)
    for prof in (b"\0" * 200, p3_profile()[:150], icc_profile(b"GRAY", [(b"kTRC", _gamma(1.0))])):
        out = np.asarray(decode_rgb(encode(im, icc_profile=prof)), np.int32)
        assert np.abs(out - np.asarray(im, np.int32)).max() == 0
    grey = _patches([(40,), (128,)], "L")
    assert np.array_equal(np.asarray(decode_rgb(encode(grey, icc_profile=p3_profile())))[..., 0], np.asarray(grey))
