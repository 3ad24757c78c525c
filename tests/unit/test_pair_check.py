"""The dedup pair check: aligned thumbnails of true copies correlate, unrelated drawings do not."""
import io

import numpy as np
from PIL import Image

from dedup.pair_check import MIN_CORRELATION, aligned_thumbnail, correlation, pair_correlation
from dedup.phash import crop_grid
from tests.helpers.images import drawing


def test_correlation_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert correlation(a, a) == 1.0
    assert abs(correlation(a, -a) + 1.0) < 1e-12
    assert abs(correlation(a, 2 * a + 7) - 1.0) < 1e-12
    b = np.array([[1.0, 0.0], [0.0, 1.0]])  # centred a = [-1.5, -0.5, 0.5, 1.5], centred b = +-0.5
    assert abs(correlation(a, b) - 0.0) < 1e-12
    assert correlation(a, np.ones((2, 2))) == 0.0  # constant: no signal, no NaN


def test_flipped_thumbnail_is_the_mirror_of_the_cropped_image():
    im = drawing(3, size=(160, 120))
    crop = (0.1, 0.05, 0.0, 0.1)
    w, h = im.size
    cut = im.crop((round(0.1 * w), round(0.05 * h), w, round(0.9 * h)))
    mirrored = cut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert correlation(aligned_thumbnail(im, crop, flipped=True), aligned_thumbnail(mirrored)) > 0.99
    assert correlation(aligned_thumbnail(im, crop), aligned_thumbnail(cut)) > 0.99


def _jpeg(im: Image.Image, q: int) -> Image.Image:
    b = io.BytesIO()
    im.save(b, "JPEG", quality=q)
    out = Image.open(io.BytesIO(b.getvalue()))
    out.load()
    return out.convert("RGB")


def test_planted_copies_pass_and_unrelated_drawings_fail():
    grid = crop_grid(0.1, 3)
    rng = np.random.default_rng(0)
    copies, unrelated = [], []
    for seed in range(20):
        im = drawing(seed, size=(240, 180))
        w, h = im.size
        copies.append(pair_correlation(im, im.resize((w // 3, h // 3), Image.Resampling.BICUBIC)))
        copies.append(pair_correlation(im, _jpeg(im, 60)))
        copies.append(pair_correlation(im, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), flipped=True))
        copies.append(pair_correlation(im, im.crop((10, 0, w - 6, h - 12)), grid))
        # a crop of up to 10% per axis, checked at the nearest crop of the grid (as the job does)
        fx, fy = rng.uniform(0.02, 0.10, 2)
        lx, ly = rng.uniform(0, fx), rng.uniform(0, fy)
        box = (lx, ly, fx - lx, fy - ly)
        cut = im.crop((round(lx * w), round(ly * h), w - round((fx - lx) * w), h - round((fy - ly) * h)))
        nearest = min(grid, key=lambda g: sum(abs(a - b) for a, b in zip(g, box)))
        copies.append(pair_correlation(im, cut, [nearest]))
        unrelated.append(pair_correlation(im, drawing(1000 + seed, size=(240, 180)), grid))
    assert min(copies) >= MIN_CORRELATION, sorted(copies)[:5]
    assert np.mean(np.array(unrelated) >= MIN_CORRELATION) <= 0.1, sorted(unrelated)[-5:]
