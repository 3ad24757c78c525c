"""The one image decoder: any real-world image, safely, to RGB; and to a bounded JPEG (pure, no Spark).

Shards (`prepare_image`), dedup (pipeline/phash.py) and transfer (transfer/downstream.py,
transfer/heldout_task.py) all decode with `decode_rgb`: one format allow-list, EXIF orientation,
transparency composited on white. Bad images raise `ImageRejected(reason)` with one of
REJECT_REASONS, naming the source when the caller gives one; callers count them or refuse the
file. Pillow's decompression-bomb guard stays on: `max_pixels` can only lower the limit.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image, ImageFile

REJECT_REASONS = ("undecodable", "truncated", "too_large", "unsupported_format", "missing_file")
# The one allow-list, as file suffix -> Pillow format: no EPS/PS (Ghostscript), no PDF; only raster
# formats whose decoders are in-process. A file is decoded by what its bytes are, not by its name:
# the suffixes only say which files of a folder are images.
IMAGE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM"}
ALLOWED_FORMATS = tuple(dict.fromkeys(IMAGE_SUFFIXES.values()))  # JPEG PNG WEBP GIF BMP TIFF PPM
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a reject, not half a picture
_ORIENT = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
           4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
           6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_90]}


class ImageRejected(Exception):
    """A bad image: `reason` is one of REJECT_REASONS; the message names `source` when given."""

    def __init__(self, reason: str, detail: str = "", source: str = ""):
        assert reason in REJECT_REASONS, reason
        msg = f"{reason}: {detail}" if detail else reason
        super().__init__(f"{source}: {msg}" if source else msg)
        self.reason, self.detail, self.source = reason, detail, source


@dataclass(frozen=True)
class ImageSpec:
    max_side: int = 320          # shorter side at most this (aspect kept); never upscaled
    quality: int = 90            # JPEG quality
    max_pixels: int | None = None  # reject larger images; None: Pillow's guard (2 x MAX_IMAGE_PIXELS)

    def __post_init__(self):
        if self.max_side < 8:
            raise ValueError(f"max_side must be >= 8, got {self.max_side}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError("max_pixels must be positive")


def read_image_bytes(image, image_root: str | None = None) -> bytes:
    """Bytes of a manifest `image` value: bytes as they are, a path (relative to image_root) or a
    file:// URI. Missing or unreadable files are `missing_file`."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if image is None or image == "":
        raise ImageRejected("missing_file", "empty image reference")
    s = str(image)
    u = urlparse(s)
    if u.scheme == "file":
        path = Path(unquote(u.path))
    elif u.scheme in ("", ) or (len(u.scheme) == 1 and os.name == "nt"):
        path = Path(s)
        if not path.is_absolute() and image_root:
            path = Path(image_root) / path
    else:
        raise ImageRejected("missing_file", f"unsupported URI scheme {u.scheme!r} in {s}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ImageRejected("missing_file", f"{path}: {e.strerror or e}") from None


def decode_rgb(data: bytes, max_side: int | None = None, max_pixels: int | None = None,
               source: str = "") -> Image.Image:
    """The one decoder (shards, dedup, transfer): encoded bytes -> an EXIF-oriented RGB image,
    transparency composited on white, 16-bit scaled, shorter side shrunk to `max_side` (never
    upscaled; None: full size). Only ALLOWED_FORMATS; images over `max_pixels` (None: Pillow's
    guard) are `too_large`. Raises ImageRejected naming `source` (a path or id) when given."""
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    try:
        return _decode(data, max_side, max_pixels)
    except ImageRejected as e:
        if source:
            raise ImageRejected(e.reason, e.detail, source) from None
        raise


def prepare_image(data: bytes, spec: ImageSpec = ImageSpec(), source: str = "") -> tuple[bytes, int, int]:
    """(jpeg_bytes, width, height): decode_rgb with shorter side <= spec.max_side, as a JPEG."""
    rgb = decode_rgb(data, spec.max_side, spec.max_pixels, source)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=spec.quality)
    return out.getvalue(), rgb.size[0], rgb.size[1]


def _decode(data: bytes, max_side: int | None, limit: int | None) -> Image.Image:
    if not data:
        raise ImageRejected("undecodable", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            if im.format not in ALLOWED_FORMATS:
                raise ImageRejected("unsupported_format", str(im.format))
            w, h = im.size
            if limit is not None and w * h > limit:
                raise ImageRejected("too_large", f"{w}x{h} > {limit} pixels")
            orientation = im.getexif().get(0x0112, 1) if im.format in ("JPEG", "TIFF", "PNG", "WEBP") else 1
            if max_side is not None:
                scale = max_side / min(w, h)
                if im.format == "JPEG" and scale < 1:  # decode at a DCT-reduced size: less memory and time
                    im.draft("RGB", (max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))))
            im.load()
            if max_side is not None:
                scale = max_side / min(im.size)  # draft may already have shrunk it
                if scale < 0.5 and im.mode in ("L", "LA", "RGB", "RGBA"):
                    im = im.reduce(int(1 / scale))  # cheap box shrink before any full-size copy
            rgb = _to_rgb(im)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_large", str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError, MemoryError) as e:
        msg = str(e)
        if isinstance(e, Image.UnidentifiedImageError):
            raise ImageRejected("undecodable", "not a recognised image") from None
        if "truncated" in msg.lower() or "broken data stream" in msg or isinstance(e, EOFError):
            raise ImageRejected("truncated", msg) from None
        raise ImageRejected("undecodable", msg or type(e).__name__) from None
    # the target comes from the original size, so draft/reduce rounding never skews the aspect
    s = 1.0 if max_side is None else min(1.0, max_side / min(w, h))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    for op in _ORIENT.get(orientation, []):
        rgb = rgb.transpose(op)
    return rgb


def _to_rgb(im: Image.Image) -> Image.Image:
    """Every mode to RGB; transparency composited on white; 16-bit scaled, not clipped."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.int64)
        hi = 65535 if im.mode.startswith("I;16") else max(1, int(a.max()))
        im = Image.fromarray(np.clip(a * 255 // hi, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    elif im.mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im, mask=im.getchannel("A"))
        return white
    return im.convert("RGB")
