"""Hand-made images and image files: awkward and bad ones for the decoder, the shards job and the
reliability tests; random drawings for dedup; a tiny ImageFolder of three colour classes."""
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def encode(im, fmt="PNG", **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def quadrants():
    """60x40 image, distinct colours per quadrant: any flip or rotation is visible."""
    a = np.zeros((40, 60, 3), np.uint8)
    a[:20, :30] = (255, 0, 0)
    a[:20, 30:] = (0, 255, 0)
    a[20:, :30] = (0, 0, 255)
    a[20:, 30:] = (255, 255, 0)
    return Image.fromarray(a)


def png_header_only(w, h, grey=False) -> bytes:
    """A tiny valid-looking PNG claiming w x h RGB (or grey) pixels (a decompression bomb's header)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if grey else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def gif_header_only(w, h) -> bytes:
    """A GIF whose screen and one frame claim w x h: 2-colour table, LZW data [clear, 0, end]."""
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
            + b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02\x02\x44\x01\x00" + b";")


def truncated_jpegs() -> dict:
    """JPEGs cut inside their entropy-coded data (not their headers): baseline and progressive, at
    60% and 95%. Pillow decodes them (grey where data is missing) if LOAD_TRUNCATED_IMAGES is set."""
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    out = {}
    for kind, kw in (("baseline", {}), ("progressive", {"progressive": True})):
        data = encode(noisy, "JPEG", quality=90, **kw)
        for frac in (0.6, 0.95):
            out[f"{kind}_{int(frac * 100)}"] = data[: int(len(data) * frac)]
    return out


def drawing(seed: int, size=(200, 150), mode="RGB", bg=(255, 255, 255)) -> Image.Image:
    """Six random ellipses and rectangles: a picture unlike any other seed's (dedup's test images)."""
    rng = np.random.default_rng(seed)
    im = Image.new(mode, size, bg)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(0, size[0] - 40), rng.integers(0, size[1] - 40)
        box = [int(x0), int(y0), int(x0 + rng.integers(20, 120)), int(y0 + rng.integers(20, 90))]
        color = tuple(int(c) for c in rng.integers(0, 255, 3)) + ((255,) if mode == "RGBA" else ())
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=color)
    return im


FOLDER_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "truck": (40, 40, 200)}


def noisy_jpeg(colour, rng):
    a = np.clip(np.array(colour) + rng.integers(-20, 20, (36, 44, 3)), 0, 255).astype(np.uint8)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=95)
    return b.getvalue()


def make_folder(root: Path, n_train=8, n_val=4, seed=0) -> Path:
    """An ImageFolder (train/, val/) of FOLDER_COLOURS: each class a noisy flat colour."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, colour in FOLDER_COLOURS.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / c / f"{i}.jpg").write_bytes(noisy_jpeg(colour, rng))
    return root
