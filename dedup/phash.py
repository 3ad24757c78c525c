"""Perceptual hash (pHash) of an image and of its crops and mirror image (pure, no Spark).

pHash: grayscale, resize to 32x32 (in float: 8-bit rounding would add noise), orthonormal 2-D
DCT-II, the 8x8 lowest frequencies without the DC term (it only says how bright the picture
is): 63 coefficients, one bit each for "above their median + DEAD_ZONE". The hash is a
non-negative int64 (bit 63 is always 0). Robust to resizing and re-encoding.

DEAD_ZONE: a left-right or up-down symmetric picture (stars, flags, most clipart) has all its
odd-frequency coefficients at zero, so plain pHash's median falls among them and JPEG noise
decides half the bits (measured on openclipart: 20% of re-encoded copies more than 12 bits
away). Requiring a coefficient to exceed the median by 2 grey levels (orthonormal scale) makes
such bits a stable 0; on a natural image it moves the threshold by a negligible amount.

Crops are not something a global DCT hash survives (a 10% crop moves ~14 of 63 bits), so the
evaluation side, which is small, is hashed at a grid of crops (`crop_grid`): a cropped
pretraining copy lands within a few bits of the closest grid crop. A horizontal flip multiplies
the coefficient of horizontal frequency v by (-1)^v, so mirrored hashes cost no second DCT.

Decoding is pipeline/images.py's: Pillow's decompression-bomb guard, EXIF orientation,
transparency composited on white (without it every transparent pixel would be black and
unrelated clipart would hash alike) and `ImageRejected` with a counted reason; dedup then
re-reads the image through a quality-95 JPEG (`decode_jpeg_roundtrip`), the pixels every
threshold here was calibrated on.
"""
from __future__ import annotations

import io
from itertools import product

import numpy as np
from PIL import Image

from pipeline.image_reader import read_image
from pipeline.images import ImageSpec, prepare_image

SIDE = 32          # the grayscale thumbnail is SIDE x SIDE
LOW = 8            # the LOW x LOW lowest frequencies, minus DC
BITS = LOW * LOW - 1  # 63 hash bits
DEAD_ZONE = 2.0
# A hash with fewer 1 bits says little: near-uniform pages, gradients, textures, plain flags and
# thin rings (openclipart's 1378 star polygrams) all hash to nearly the same few bits and would
# match each other. Such images are counted as `low_information` and never matched. Openclipart:
# median 30 bits set; 10% of images have fewer than 10.
MIN_SET_BITS = 12
# Decode to a small RGB first (JPEG draft / Pillow reduce keep huge PNGs cheap), then 32x32.
_DECODE = ImageSpec(max_side=128, quality=95)
Box = tuple[float, float, float, float]  # fractions cut from the left, top, right, bottom


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix D (n x n): dct(x) = D @ x, 2-D dct(X) = D @ X @ D.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_D = dct_matrix(SIDE)
_MIRROR_SIGN = np.where(np.arange(SIDE) % 2 == 1, -1.0, 1.0)[None, :]  # (-1)^v by column
_WEIGHTS_U64 = np.array([1 << (BITS - 1 - i) for i in range(BITS)], dtype=np.uint64)  # first AC bit = most significant


def gray_float(rgb: Image.Image) -> Image.Image:
    """Luma as a 32-bit float image: resized in float, 8-bit rounding adds no noise."""
    return Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32), "F")


def gray_thumbnail(rgb: Image.Image, crop: Box = (0.0, 0.0, 0.0, 0.0), side: int = SIDE) -> np.ndarray:
    """side x side float64 luma in [0, 255] of the image with `crop` fractions cut off each side
    (aspect ratio not kept, as pHash does). `rgb` may already be a `gray_float` image."""
    g = rgb if rgb.mode == "F" else gray_float(rgb)
    w, h = g.size
    l, t, r, b = crop
    box = (l * w, t * h, w - r * w, h - b * h)
    return np.asarray(g.resize((side, side), Image.Resampling.LANCZOS, box=box), dtype=np.float64)


def dct2(gray: np.ndarray) -> np.ndarray:
    """The orthonormal 2-D DCT-II of a SIDE x SIDE array."""
    if gray.shape != (SIDE, SIDE):
        raise ValueError(f"expected a {SIDE}x{SIDE} array, got {gray.shape}")
    return _D @ gray @ _D.T


def hash_bits(coeffs: np.ndarray) -> np.ndarray:
    """The 63 hash bits (booleans, row-major over the 8x8 block, DC skipped) of DCT coefficients."""
    ac = coeffs[:LOW, :LOW].ravel()[1:]
    return ac > np.median(ac) + DEAD_ZONE


def bits_to_int(bits) -> int:
    return int(np.dot(np.asarray(bits, dtype=np.uint64), _WEIGHTS_U64))


def phash_pair(rgb: Image.Image, crop: Box = (0.0, 0.0, 0.0, 0.0)) -> tuple[int, int]:
    """(pHash, pHash of the horizontally mirrored image) of `rgb` cropped by `crop`."""
    c = dct2(gray_thumbnail(rgb, crop))
    return bits_to_int(hash_bits(c)), bits_to_int(hash_bits(c * _MIRROR_SIGN))


def phash(rgb: Image.Image) -> int:
    return phash_pair(rgb)[0]


def crop_grid(max_crop: float, steps: int) -> list[Box]:
    """Crops that cut i/steps * max_crop from the left and j/steps * max_crop from the right
    (i + j <= steps), likewise top/bottom: every crop removing at most max_crop of the width and
    of the height is within max_crop / (2 * steps) per side of one of them. The uncropped image
    comes first. steps=0: only the whole image."""
    if steps < 0 or not 0.0 <= max_crop < 0.5:
        raise ValueError(f"need steps >= 0 and max_crop in [0, 0.5), got {steps}, {max_crop}")
    if steps == 0 or max_crop == 0.0:
        return [(0.0, 0.0, 0.0, 0.0)]
    side = [(i * max_crop / steps, j * max_crop / steps)
            for i in range(steps + 1) for j in range(steps + 1 - i)]
    return [(l, t, r, b) for (l, r), (t, b) in product(side, side)]


def variant_hashes(rgb: Image.Image, crops: list[Box], flips: bool) -> list[tuple[int, bool, int]]:
    """(crop index, flipped, hash) for every crop (and its mirror image when `flips`)."""
    out, g = [], gray_float(rgb)
    for i, crop in enumerate(crops):
        h, m = phash_pair(g, crop)
        out.append((i, False, h))
        if flips:
            out.append((i, True, m))
    return out


def decode_jpeg_roundtrip(data: bytes, max_side: int = _DECODE.max_side, source: str = "") -> Image.Image:
    """The dedup view of an image: pipeline.images' decoder (shorter side <= max_side), then a
    quality-95 JPEG round trip. Every hash, DEAD_ZONE, MIN_SET_BITS and the measured recall were
    calibrated on these pixels (decoding straight to RGB moves 28% of openclipart hashes by a bit
    or more), so the round trip stays. Raises ImageRejected (naming `source` when given)."""
    spec = _DECODE if max_side == _DECODE.max_side else ImageSpec(max_side=max_side, quality=_DECODE.quality)
    jpeg, _, _ = prepare_image(data, spec, source)
    im = Image.open(io.BytesIO(jpeg), formats=("JPEG",))
    im.load()
    return im


def phash_image(image, image_root: str | None = None) -> tuple[int, int]:
    """(hash, mirrored hash) of a manifest `image` value (any pipeline.image_reader reference)."""
    return phash_pair(decode_jpeg_roundtrip(read_image(image, image_root)))


def low_information(h: int, min_set_bits: int = MIN_SET_BITS) -> bool:
    return bin(h).count("1") < min_set_bits


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes (signed or unsigned ints)."""
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")


def hamming_array(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance of two int64/uint64 arrays."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64).view(np.uint64), np.asarray(b, dtype=np.int64).view(np.uint64))
    return np.bitwise_count(x).astype(np.int64)
