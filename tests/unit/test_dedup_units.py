"""pHash, Hamming distance, crop grid and LSH banding against independent computations."""
import io
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.fft import dctn

from pipeline.images import ImageRejected
from pipeline.lsh import Banding, candidate_pairs, default_bands, near_pairs
from pipeline.phash import (BITS, DEAD_ZONE, crop_grid, decode_rgb, hamming, hamming_array, phash,
                            phash_image, phash_pair)
from tests.helpers.images import drawing


def png(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


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
    h = phash_image(png(im))[0]
    b = io.BytesIO()
    im.save(b, "JPEG", quality=60)
    assert hamming(h, phash_image(b.getvalue())[0]) <= 4
    assert hamming(h, phash_image(png(im.resize((90, 70))))[0]) <= 4
    assert min(hamming(h, phash_image(png(drawing(s)))[0]) for s in range(10, 20)) > 12


def test_transparency_is_composited_on_white():
    rgba = drawing(4, mode="RGBA", bg=(0, 0, 0, 0))
    on_white = Image.new("RGB", rgba.size, (255, 255, 255))
    on_white.paste(rgba, mask=rgba.getchannel("A"))
    assert phash_image(png(rgba)) == phash_image(png(on_white))


def test_unreadable_bytes_are_rejected_with_a_reason(tmp_path):
    with pytest.raises(ImageRejected) as e:
        decode_rgb(b"<html>not an image</html>")
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


def test_banding_spans_partition_the_bits():
    for t in range(0, 20):
        for bands in (1, 2, 3, default_bands(t), 7, 63):
            spans = Banding(t, bands).spans()
            covered = sorted(i for s, w in spans for i in range(s, s + w))
            assert covered == list(range(BITS))


def flip_bits(h: int, positions) -> int:
    for p in positions:
        h ^= 1 << p
    return h


@settings(max_examples=300, deadline=None)
@given(h=st.integers(0, (1 << 63) - 1), t=st.integers(0, 14), bands=st.integers(1, 15), data=st.data())
def test_every_pair_within_threshold_shares_a_probed_band_value(h, t, bands, data):
    """The pigeonhole guarantee: flipping any <= t bits never escapes every probe."""
    if t // bands > 2:
        bands = t // 2 + 1  # keep the probe sets small
    banding = Banding(t, bands)
    k = data.draw(st.integers(0, t))
    positions = data.draw(st.lists(st.integers(0, BITS - 1), min_size=k, max_size=k, unique=True))
    g = flip_bits(h, positions)
    pairs = candidate_pairs(np.array([h], dtype=np.int64), np.array([g], dtype=np.int64), banding)
    assert pairs.tolist() == [[0, 0]]


@pytest.mark.parametrize("t,bands", [(6, 7), (6, 3), (10, 11), (10, 4), (5, 2)])
def test_near_pairs_equal_brute_force(t, bands):
    rng = np.random.default_rng(t * 100 + bands)
    index = rng.integers(0, 1 << 63, 3000, dtype=np.int64)
    queries = rng.integers(0, 1 << 63, 200, dtype=np.int64)
    for q in range(0, 200, 2):  # plant near copies at every distance 0..t+2
        i = int(rng.integers(0, 3000))
        d = q % (t + 3)
        queries[q] = flip_bits(int(index[i]), rng.choice(BITS, d, replace=False).tolist())
    bits = np.unpackbits(index.astype(">i8").view(np.uint8).reshape(-1, 8), axis=1).astype(bool)
    qbits = np.unpackbits(queries.astype(">i8").view(np.uint8).reshape(-1, 8), axis=1).astype(bool)
    dist = (bits[:, None, :] != qbits[None, :, :]).sum(-1)
    want = sorted(map(list, zip(*np.nonzero(dist <= t))))
    pairs, d, n_cand = near_pairs(index, queries, Banding(t, bands))
    assert pairs.tolist() == want
    assert d.tolist() == [dist[i, q] for i, q in want]
    assert n_cand < len(index) * len(queries) / 4  # random hashes rarely share a band


def test_banding_validates():
    with pytest.raises(ValueError, match="threshold"):
        Banding(63, 7)
    with pytest.raises(ValueError, match="bands"):
        Banding(6, 0)
    assert Banding(6, 3).radius == 2 and Banding(6, 7).radius == 0
    # probe masks: all masks of weight <= radius over the band's width, computed by itertools
    b = Banding(5, 2)
    w = b.spans()[0][1]
    want = {0} | {1 << i for i in range(w)} | {(1 << i) | (1 << j) for i, j in itertools.combinations(range(w), 2)}
    assert set(b.probe_masks(0)) == want and len(b.probe_masks(0)) == len(want)
