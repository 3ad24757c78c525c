"""Second check of a matched pair: aligned luma thumbnails must correlate (pure, no Spark).

A hash or embedding match says two images are close in a 63-bit or D-dimensional summary; with
100+ crop and mirror variants per evaluation image, summaries of unrelated clipart (flags, bars,
buttons, a small object on a white page) also land within the threshold. The pair check looks at
the pixels: the evaluation image, cut by each crop of a grid and mirrored if the mirror image
matched, and the pretraining image are resized to SIDE x SIDE luma; the best Pearson correlation
must reach a minimum. Planted resized / re-encoded / cropped / mirrored copies reach
MIN_CORRELATION (tests/unit/test_pair_check.py); on openclipart, about half of the pairs at pHash
distance 5-6 do not (README, Measured).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from PIL import Image

from dedup.phash import Box, decode_jpeg_roundtrip, gray_float, gray_thumbnail
from pipeline.image_reader import read_images
from pipeline.images import ImageRejected

SIDE = 16
MIN_CORRELATION = 0.85


def aligned_thumbnail(rgb: Image.Image, crop: Box = (0.0, 0.0, 0.0, 0.0), flipped: bool = False,
                      side: int = SIDE) -> np.ndarray:
    """side x side float64 luma of `rgb` with `crop` fractions cut (left, top, right, bottom, in
    the unmirrored image), then mirrored left-right when `flipped`: the variant as hashed."""
    a = gray_thumbnail(rgb, crop, side)
    return a[:, ::-1] if flipped else a


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-shape arrays; 0.0 when either is constant (no signal)."""
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    norm = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / norm) if norm > 1e-9 else 0.0


def pair_correlation(eval_rgb: Image.Image, pretrain_rgb: Image.Image,
                     crops: list[Box] = ((0.0, 0.0, 0.0, 0.0),), flipped: bool = False) -> float:
    """The best correlation over the evaluation image's `crops` (the job passes a grid at least as
    fine as pHash's: an embedding match's variant is not always the best-aligned crop)."""
    g, pre = gray_float(eval_rgb), aligned_thumbnail(pretrain_rgb)
    return max(correlation(aligned_thumbnail(g, c, flipped), pre) for c in crops)


def correlated_batches(batches, columns: list[str], crops: list[Box], image_root: str | None):
    """Per Arrow batch of matched pairs (`columns`, flipped among them, plus _pre_image and
    _eval_image): `columns` + correlation, the best pair_correlation over `crops`; null when an
    image cannot be read again."""
    for b in batches:
        d = b.to_pydict()
        corr = []
        pre_data, _ = read_images(d["_pre_image"], image_root)
        ev_data, _ = read_images(d["_eval_image"], image_root)
        for pre, ev, flipped in zip(pre_data, ev_data, d["flipped"]):
            try:
                if isinstance(pre, ImageRejected) or isinstance(ev, ImageRejected):
                    raise ImageRejected("missing_file")
                corr.append(pair_correlation(decode_jpeg_roundtrip(ev), decode_jpeg_roundtrip(pre),
                                             crops, bool(flipped)))
            except ImageRejected:
                corr.append(None)
        out = {n: b.column(n) for n in columns}
        out["correlation"] = pa.array(corr, pa.float32())
        yield pa.RecordBatch.from_pydict(out)
