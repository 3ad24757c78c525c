"""Issue 16, item 3: decompression bombs (PNG, GIF) refused from their headers, and images just
under the pixel limit decoded without a full-size copy, with the decoding process's peak memory
measured in a child interpreter."""
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.images import PILLOW_DEFAULT_MAX_PIXELS, decode_rgb
from tests.helpers import ROOT
from tests.helpers.images import encode, gif_header_only

MAX = PILLOW_DEFAULT_MAX_PIXELS


# ---- memory: bombs and images just under the limit (item 3) ------------------------------------

_CHILD = r"""
import json, sys
from pipeline.images import ImageRejected, decode_rgb

def status(key):  # kB; VmHWM: this process's peak RSS since the last reset
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))

decode_rgb(b"P5 1 1 255 \0")  # plugins loaded before any measurement
out = []
for path, max_side in json.loads(sys.argv[1]):
    data = open(path, "rb").read()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS
    before = status("VmRSS")
    try:
        rgb = decode_rgb(data, max_side)
        got = [list(rgb.size), list(rgb.getpixel((rgb.size[0] // 2, rgb.size[1] // 2)))]
    except ImageRejected as e:
        got = e.reason
    out.append([got, (status("VmHWM") - before) / 1024])
    del data
print(json.dumps(out))
"""


def decode_in_child(*jobs) -> list:
    """[(result, peak RSS growth in MiB)] of decode_rgb(path's bytes, max_side) for each
    (path, max_side), in a fresh interpreter (Linux: the peak is VmHWM, reset per image through
    /proc/self/clear_refs; ru_maxrss would carry this process's peak across fork and exec)."""
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([[str(p), m] for p, m in jobs])], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def png_file(path: Path, w: int, h: int, color_type: int, fill: bytes, palette: bytes = b"") -> Path:
    """A valid 8-bit PNG of w x h pixels all equal to `fill` (one pixel's bytes), written row by
    row: the test never holds the pixels. color_type 0 grey, 3 palette (with `palette`), 6 RGBA."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    rows = (b"\0" + fill * w) * 64
    z = zlib.compressobj(1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)))
        if palette:
            f.write(chunk(b"PLTE", palette))
        for y in range(0, h, 64):
            part = z.compress(rows if h - y >= 64 else rows[: (h - y) * (1 + len(fill) * w)])
            if part:
                f.write(chunk(b"IDAT", part))
        f.write(chunk(b"IDAT", z.flush()) + chunk(b"IEND", b""))
    return path


def test_bombs_are_refused_from_the_header_with_memory_measured(tmp_path):
    """A real PNG zlib bomb (grey, just over 2 x MAX pixels: ~180 MB decoded from a small file) and
    a GIF claiming as much: `too_large` while the decoding process grows by a few MiB."""
    side = int((2 * MAX) ** 0.5) + 1
    bomb = png_file(tmp_path / "bomb.png", side, side, 0, b"\0")
    assert bomb.stat().st_size < 2 * 2**20 and side * side > 2 * MAX  # ~1000x smaller than its pixels
    gif = tmp_path / "bomb.gif"
    gif.write_bytes(gif_header_only(side, side))
    full_mib = side * side / 2**20  # a full decode, 1 byte per pixel
    for result, grew in decode_in_child((bomb, 64), (gif, 64)):
        assert result == "too_large" and grew < full_mib / 20, (result, grew, full_mib)


def test_a_jpeg_just_under_the_limit_is_decoded_reduced(tmp_path):
    """JPEG draft: a grey JPEG just under 2 x MAX pixels decodes at 1/8 scale, in a few MiB."""
    side = int((2 * MAX) ** 0.5)
    path = tmp_path / "big.jpg"
    Image.new("L", (side, side), 77).save(path, "JPEG", quality=50)
    (result, grew), = decode_in_child((path, 64))
    assert result[0] == [64, 64] and abs(result[1][0] - 77) <= 2
    assert grew < side * side / 2**20 / 8, grew  # a full decode: side * side bytes


def test_pngs_just_under_the_limit_make_no_full_size_copy(tmp_path):
    """PNG cannot be decoded at less than full size; the conversion to RGB must not add a full-size
    copy: palette (1 byte a pixel decoded, RGB would be 4) and RGBA (Pillow's reduce would add a
    premultiplied copy). Peak growth stays under the decoded size plus a margin."""
    side = int((2 * MAX) ** 0.5)
    pal = png_file(tmp_path / "pal.png", side, side, 3, b"\x01", palette=b"\0\0\0" + bytes((30, 160, 220)))
    rgba_side = 6000
    rgba = png_file(tmp_path / "rgba.png", rgba_side, rgba_side, 6, bytes((200, 50, 0, 128)))
    (pal_result, pal_grew), (rgba_result, rgba_grew) = decode_in_child((pal, 64), (rgba, 64))
    assert pal_result == [[64, 64], [30, 160, 220]]
    assert rgba_result[0] == [64, 64] and np.abs(np.array(rgba_result[1]) - (227, 152, 127)).max() <= 1  # on white
    pal_mib, rgba_mib = side * side / 2**20, 4 * rgba_side**2 / 2**20
    assert pal_grew < pal_mib + 48, (pal_grew, pal_mib)  # a full RGB copy: + 4 x pal_mib
    assert rgba_grew < rgba_mib * 1.25 + 24, (rgba_grew, rgba_mib)  # a premultiplied copy: + rgba_mib


@pytest.mark.parametrize("mode", ["P", "RGBA", "I;16", "RGB"])
def test_banded_shrink_equals_pillows_whole_image_resize(mode):
    """Larger than a band: the decoder's result equals Pillow converting the whole image to RGB
    (alpha on white) and resizing it with Lanczos, reducing_gap=3 (what it did before bands)."""
    rng = np.random.default_rng(1)
    h, w = 1201, 1333  # 1.6 Mpx: several bands and a partial last one
    a = rng.integers(0, 255, (h, w, 4), dtype=np.uint8)
    a[:400, :, 3] = 0
    if mode == "P":
        data = encode(Image.fromarray(a[..., :3]).quantize(64), transparency=5)
    elif mode == "I;16":
        data = encode(Image.fromarray(a[..., 0].astype(np.uint16) * 257))
    else:
        data = encode(Image.fromarray(a if mode == "RGBA" else a[..., :3], mode))
    # 16 bits scaled to 8 (x * 255 // 65535): the 8-bit source again
    full = (Image.fromarray(a[..., 0]) if mode == "I;16" else Image.open(io.BytesIO(data))).convert("RGBA")
    for max_side in (700, 100):
        s = max_side / min(w, h)
        size = (round(w * s), round(h * s))
        src = full.reduce(int(1 / s)) if mode in ("RGBA", "RGB") and s < 0.5 else full  # as the decoder does
        on_white = Image.new("RGB", src.size, (255, 255, 255))
        on_white.paste(src.convert("RGB"), mask=src.getchannel("A"))
        ref = np.asarray(on_white.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), np.int32)
        got = np.asarray(decode_rgb(data, max_side), np.int32)
        assert got.shape == ref.shape and np.array_equal(got, ref), (mode, max_side)
