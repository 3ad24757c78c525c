"""The one image decoder: any real-world image, safely, to RGB; and to a bounded JPEG (pure, no Spark).

Shards (`prepare_image`), dedup (dedup/phash.py) and transfer (transfer/downstream.py,
transfer/heldout_task.py) all decode with `decode_rgb`. Its policy, one place for every stage:

- Formats: Pillow is only ever asked to open ALLOWED_FORMATS (`Image.open(formats=...)`), so no
  other plugin's parser runs (EPS/PS would hand the file to Ghostscript; PDF, FITS, PSD, ICO, ...
  are not pictures we train on). A file is decoded by what its bytes are, not by its name; a file
  in another format is `unsupported_format` naming that format (found by the plugins' magic-number
  checks alone), bytes no plugin recognises are `undecodable`. MPO (camera JPEGs with a second
  picture) opens as JPEG and decodes its first picture.
- Size: an image over `pixel_limit()` pixels, twice Image.MAX_IMAGE_PIXELS (where Pillow's
  DecompressionBombError starts), is `too_large` from its header, before any pixel is decoded.
  Between 1x and 2x Pillow only warns; those images are decoded (openclipart holds 13 PNGs of
  105-169 Mpx), shrunk as below. If something sets MAX_IMAGE_PIXELS to None, Pillow's default stands
  in: the guard cannot be switched off here; `max_pixels` can only lower the limit.
- Memory: a JPEG is decoded at a DCT-reduced size (draft). Other formats cannot be decoded at
  less than full size; their pixels are converted and box-reduced in bands of _BAND_PIXELS, so
  the peak is the decoded image (at most 4 bytes a pixel) plus a band, never a full-size copy in
  another mode. The result equals the whole-image computation exactly.
- Colour: EXIF orientation; transparency composited on white; 16-bit scaled, not clipped; an
  embedded ICC profile (RGB, grey or CMYK) is converted to sRGB with LittleCMS; an unreadable
  profile, or one for another colour space than the pixels', is ignored (the image is taken as
  sRGB, as browsers do). A CMYK JPEG is read as inverted when it carries Adobe's APP14 marker
  (Photoshop's convention, which Pillow assumes for all) and as plain inks without it (as libvips
  reads them).
Bad images raise `ImageRejected(reason)` with one of REJECT_REASONS (pipeline/image_reader.py reads the
bytes, with its own reasons), naming the source when the
caller gives one; callers count them or refuse the file.
"""
from __future__ import annotations

import functools
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageCms, ImageFile

# decode_rgb's reasons, then pipeline/image_reader.py's (a reference that could not be read)
REJECT_REASONS = ("undecodable", "truncated", "too_large", "unsupported_format", "missing_file",
                  "access_denied", "unreachable", "read_error")
# The one allow-list, as file suffix -> Pillow format: only raster formats whose decoders are
# in-process. The suffixes only say which files of a folder are images.
IMAGE_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM"}
ALLOWED_FORMATS = tuple(dict.fromkeys(IMAGE_SUFFIXES.values()))  # JPEG PNG WEBP GIF BMP TIFF PPM
_OPENED_FORMATS = (*ALLOWED_FORMATS, "MPO")  # Pillow's JPEG opener returns MPO for multi-picture JPEGs
_EXIF_FORMATS = ("JPEG", "MPO", "TIFF", "PNG", "WEBP")
# Bump when decode_rgb gives other pixels for some input: caches of decoded images include it.
# 2: ICC profiles to sRGB, plain (non-Adobe) CMYK JPEGs, tRNS colour keys on white, MPO.
DECODER_VERSION = 2
PILLOW_DEFAULT_MAX_PIXELS = 89_478_485  # Image.MAX_IMAGE_PIXELS as Pillow ships it
_BAND_PIXELS = 1 << 20  # pixels converted at a time when an image is larger
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a reject, not half a picture
_SRGB = ImageCms.createProfile("sRGB")
_ICC_SPACES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}  # profile colour space -> the mode it applies to
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
    max_pixels: int | None = None  # reject larger images; None: pixel_limit() (2 x MAX_IMAGE_PIXELS)

    def __post_init__(self):
        if self.max_side < 8:
            raise ValueError(f"max_side must be >= 8, got {self.max_side}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError("max_pixels must be positive")


def pixel_limit(max_pixels: int | None = None) -> int:
    """The most pixels a decoded image may have: 2 x Image.MAX_IMAGE_PIXELS (Pillow's default when
    it is None), or `max_pixels` when that is lower."""
    limit = 2 * int(Image.MAX_IMAGE_PIXELS or PILLOW_DEFAULT_MAX_PIXELS)
    return limit if max_pixels is None else min(limit, max_pixels)


def sniff_format(data: bytes) -> str | None:
    """The Pillow format whose magic-number check `data` passes, or None. Only the plugins'
    prefix checks run, never a plugin's parser: it names a format we refuse."""
    Image.init()
    head = data[:64]
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(head):
                return fmt
        except (IndexError, TypeError, ValueError, struct.error):  # a check wanting more bytes than there are
            continue
    return None


def decode_rgb(data: bytes, max_side: int | None = None, max_pixels: int | None = None,
               source: str = "") -> Image.Image:
    """The one decoder (shards, dedup, transfer): encoded bytes -> an EXIF-oriented sRGB image,
    shorter side shrunk to `max_side` (never upscaled; None: full size), by the module's policy.
    Raises ImageRejected naming `source` (a path or id) when given."""
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


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow warns over MAX_IMAGE_PIXELS and raises over twice that: pixel_limit() decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except Image.UnidentifiedImageError:
            pass
    fmt = sniff_format(data)
    if fmt is not None and fmt not in _OPENED_FORMATS:
        raise ImageRejected("unsupported_format", fmt)
    raise ImageRejected("undecodable", f"damaged {fmt} header" if fmt else "not a recognised image")


def _decode(data: bytes, max_side: int | None, max_pixels: int | None) -> Image.Image:
    if not data:
        raise ImageRejected("undecodable", "zero bytes")
    limit = pixel_limit(max_pixels)
    try:
        with _open(data) as im:
            if im.format not in _OPENED_FORMATS:  # formats= already ensures it
                raise ImageRejected("unsupported_format", str(im.format))
            w, h = im.size
            if w * h > limit:
                raise ImageRejected("too_large", f"{w}x{h} > {limit} pixels")
            orientation = im.getexif().get(0x0112, 1) if im.format in _EXIF_FORMATS else 1
            s = 1.0 if max_side is None else min(1.0, max_side / min(w, h))
            size = (max(1, round(w * s)), max(1, round(h * s)))  # from the original size: no aspect skew
            if im.format in ("JPEG", "MPO") and s < 1:  # decode at a DCT-reduced size: less memory and time
                im.draft("RGB", (max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))))
            im.load()
            pixels = im
            if im.mode == "CMYK" and im.format in ("JPEG", "MPO") and "adobe" not in im.info:
                pixels = ImageChops.invert(im)  # Pillow inverts every CMYK JPEG; only Adobe's are inverted
            rgb = _shrink_to_rgb(pixels, size, max_side, im.info.get("icc_profile") or None)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_large", str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        msg = str(e)
        if "truncated" in msg.lower() or "broken data stream" in msg or isinstance(e, EOFError):
            raise ImageRejected("truncated", msg) from None
        raise ImageRejected("undecodable", msg or type(e).__name__) from None
    for op in _ORIENT.get(orientation, []):
        rgb = rgb.transpose(op)
    return rgb


def _shrink_to_rgb(im: Image.Image, size: tuple[int, int], max_side: int | None, icc: bytes | None) -> Image.Image:
    """`im` (loaded, maybe drafted) as RGB at `size`, converted band by band (see _banded)."""
    w, h = im.size
    top = max(1, int(im.getextrema()[1])) if im.mode == "I" else None  # 32-bit: scaled by the image's max
    scale = 1.0 if max_side is None else max_side / min(w, h)
    if scale < 0.5 and im.mode in ("L", "LA", "RGB", "RGBA") and "transparency" not in im.info:
        # box-reduce in the decoded mode first (Pillow premultiplies alpha), then RGB, then Lanczos
        k = int(1 / scale)
        rgb = _banded(im, (k, k), lambda band: _to_rgb(band.reduce(k), icc, top))
        return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    # RGB first, then what rgb.resize(size, LANCZOS, reducing_gap=3.0) does: a box reduce by whole
    # factors, Lanczos for the rest
    f = (int(w / size[0] / 3.0) or 1, int(h / size[1] / 3.0) or 1)
    rgb = _banded(im, f, lambda band: _reduce(_to_rgb(band, icc, top), f))
    if rgb.size == size:
        return rgb
    return rgb.resize(size, Image.Resampling.LANCZOS, box=(0, 0, w / f[0], h / f[1]))


def _reduce(im: Image.Image, f: tuple[int, int]) -> Image.Image:
    return im if f == (1, 1) else im.reduce(f)


def _banded(im: Image.Image, f: tuple[int, int], convert) -> Image.Image:
    """convert(im): RGB reduced by `f` (fx, fy), computed on bands of rows (a multiple of fy, about
    _BAND_PIXELS each) so no full-size copy of `im` is made; equal to convert(im), as every step
    is per pixel or per fx x fy block."""
    w, h = im.size
    if w * h <= _BAND_PIXELS:
        return convert(im)
    rows = max(f[1], _BAND_PIXELS // w // f[1] * f[1])
    out = None
    for y in range(0, h, rows):
        part = convert(im.crop((0, y, w, min(h, y + rows))))
        if out is None:
            out = Image.new("RGB", (part.size[0], -(-h // f[1])))
        out.paste(part, (0, y // f[1]))
    return out


def _to_rgb(im: Image.Image, icc: bytes | None = None, top: int | None = None) -> Image.Image:
    """Every mode to sRGB: transparency composited on white; 16-bit scaled (32-bit by `top`), not
    clipped; through the ICC profile `icc` when it is readable and for this colour space."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.int64)
        hi = 65535 if im.mode.startswith("I;16") else (top or max(1, int(a.max())))
        im = Image.fromarray(np.clip(a * 255 // hi, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("La", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif im.mode in ("L", "RGB") and "transparency" in im.info:  # a tRNS colour key
        im = im.convert("RGBA")
    elif im.mode == "YCbCr":
        im = im.convert("RGB")
    alpha = None
    if im.mode in ("LA", "RGBA"):
        alpha, im = im.getchannel("A"), im.convert(im.mode[:-1])
    rgb = _apply_icc(im, icc) if icc else None
    if rgb is None:
        rgb = im.convert("RGB")
    if alpha is None:
        return rgb
    white = Image.new("RGB", rgb.size, (255, 255, 255))
    white.paste(rgb, mask=alpha)
    return white


def _apply_icc(im: Image.Image, icc: bytes) -> Image.Image | None:
    transform = _icc_transform(icc, im.mode)
    if transform is None:
        return None
    try:
        return ImageCms.applyTransform(im, transform)
    except ImageCms.PyCMSError:
        return None


@functools.lru_cache(maxsize=64)
def _icc_transform(profile: bytes, mode: str):
    """A LittleCMS transform from `profile` to sRGB for `mode` pixels; None when the profile cannot
    be read or describes another colour space (the pixels are then taken as sRGB)."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if _ICC_SPACES.get(src.profile.xcolor_space.strip()) != mode:
            return None
        return ImageCms.buildTransform(src, _SRGB, mode, "RGB")
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None
