"""dedup/phash.py: pHash, Hamming distance and crop grid against independent computations."""
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.fft import dctn

from dedup.phash import (DEAD_ZONE, crop_grid, decode_jpeg_roundtrip, hamming, hamming_array, phash, phash_image,
                         phash_pair)
from pipeline.images import ImageRejected
from tests.helpers import ROOT
from tests.helpers.images import drawing, encode


def reference_phash(rgb: Image.Image) -> int:
    """pHash written out independently: scipy's orthonormal DCT, numpy's packbits."""
    g = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32), "F")
    thumb = np.asarray(g.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    c = dctn(thumb, type=2, norm="ortho")[:8, :8].ravel()[1:]
    bits = np.concatenate([[0], c > np.median(c) + DEAD_ZONE])  # 64 bits, the top one unused
    return int.from_bytes(np.packbits(bits.astype(np.uint8)).tobytes(), "big")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phash_matches_scipy_reference(seed):
    im = drawing(seed)
    assert phash(im) == reference_phash(im)
    assert 0 <= phash(im) < 1 << 63


def test_mirror_hash_equals_hash_of_mirrored_image():
    for seed in range(5):
        im = drawing(seed)
        _, mirrored = phash_pair(im)
        assert hamming(mirrored, phash(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT))) <= 1
        assert hamming(mirrored, phash(im)) > 8  # the drawings are not symmetric


def test_robust_to_resize_and_jpeg_but_not_to_a_different_picture():
    im = drawing(3)
    h = phash_image(encode(im))[0]
    b = io.BytesIO()
    im.save(b, "JPEG", quality=60)
    assert hamming(h, phash_image(b.getvalue())[0]) <= 4
    assert hamming(h, phash_image(encode(im.resize((90, 70))))[0]) <= 4
    assert min(hamming(h, phash_image(encode(drawing(s)))[0]) for s in range(10, 20)) > 12


def test_transparency_is_composited_on_white():
    rgba = drawing(4, mode="RGBA", bg=(0, 0, 0, 0))
    on_white = Image.new("RGB", rgba.size, (255, 255, 255))
    on_white.paste(rgba, mask=rgba.getchannel("A"))
    assert phash_image(encode(rgba)) == phash_image(encode(on_white))


def test_unreadable_bytes_are_rejected_with_a_reason(tmp_path):
    with pytest.raises(ImageRejected) as e:
        decode_jpeg_roundtrip(b"<html>not an image</html>")
    assert e.value.reason == "undecodable"
    with pytest.raises(ImageRejected) as e:
        phash_image(str(tmp_path / "missing.png"))
    assert e.value.reason == "missing_file"


def popcount(x: int) -> int:
    return bin(x % (1 << 64)).count("1")


def test_hamming_against_bit_loop():
    rng = np.random.default_rng(0)
    a = rng.integers(-(1 << 63), (1 << 63) - 1, 500, dtype=np.int64)
    b = rng.integers(-(1 << 63), (1 << 63) - 1, 500, dtype=np.int64)
    want = [popcount((int(x) ^ int(y)) % (1 << 64)) for x, y in zip(a, b)]
    assert [hamming(int(x), int(y)) for x, y in zip(a, b)] == want
    assert hamming_array(a, b).tolist() == want
    assert hamming(0, -1) == 64 and hamming(5, 5) == 0


def test_crop_grid_covers_every_crop_within_half_a_step():
    crops = crop_grid(0.1, 3)
    assert crops[0] == (0.0, 0.0, 0.0, 0.0) and len(crops) == 100
    assert all(l + r <= 0.1 + 1e-12 and t + b <= 0.1 + 1e-12 for l, t, r, b in crops)
    grid = np.array(crops)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        fx, fy = rng.uniform(0, 0.1, 2)
        lx, ly = rng.uniform(0, fx), rng.uniform(0, fy)
        want = np.array([lx, ly, fx - lx, fy - ly])
        assert np.abs(grid - want).max(axis=1).min() <= 0.1 / 6 + 1e-12
    assert crop_grid(0.1, 0) == [(0.0, 0.0, 0.0, 0.0)]


def test_the_phash_job_imports_neither_torch_nor_the_trunk_code():
    """Spark's executors import the dedup package for every method; torch (R-MAC, the trunk) is
    imported only when --method embedding or rmac runs a trunk."""
    code = ("import sys; import jobs.dedup, dedup.spark, dedup.config, dedup.describe, dedup.index; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'trainer') "
            "or m == 'dedup.rmac'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
