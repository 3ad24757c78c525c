"""The constructed contamination case of issue 8: planted near-duplicates and look-alikes.

From N held-out openclipart images (the evaluation set) it writes a pretraining manifest with,
per evaluation image, a resized copy, a JPEG q70 re-encode, a crop (up to 10% of the width and
of the height cut, split at random between the two sides), a horizontal mirror image, and three
harder copies whose recall is reported, not required (issue 17): a crop of 10-20%, brightness
scaled by 0.8 or 1.2, and a 3-degree rotation (corners filled white); plus one
look-alike non-duplicate per evaluation image: a different held-out image from the same folder
(another star, another flag, another bird: same author conventions, same style), else from the
same category. Look-alikes whose decoded pixels equal an evaluation image's (re-uploads) are
skipped, so every look-alike is a different picture.
"""
from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance

from pipeline.image_reader import read_image
from pipeline.images import ImageRejected, ImageSpec, prepare_image

TRANSFORMS = ("resize", "jpeg", "crop", "flip", "crop20", "bright", "rotate")
REQUIRED = ("resize", "jpeg", "crop", "flip")  # recall >= 0.95 (issue 17); the others are reported
# 1378 procedurally generated thin-line polygrams (star_<N>pt<M>step) that all render as the same
# thin ring at the hash's 32x32 resolution: their false positives are reported separately.
STAR_FAMILY = "shapes/stars/star_"
BASE = ImageSpec(max_side=400, quality=95)  # the "original" the copies are made from


def _render(path: str) -> Image.Image | None:
    try:
        jpeg, _, _ = prepare_image(read_image(path), BASE)
    except ImageRejected:
        return None
    im = Image.open(io.BytesIO(jpeg))
    im.load()
    return im


def _pixels_digest(im: Image.Image) -> str:
    return hashlib.sha256(im.convert("RGB").resize((64, 64)).tobytes()).hexdigest()


def _save(im: Image.Image, path: Path, fmt: str = "PNG", **kw) -> str:
    im.save(path, fmt, **kw)
    return str(path)


CROP_CUTS = {"crop": (0.02, 0.10), "crop20": (0.10, 0.20)}  # share of the width and of the height cut


def _cut(im: Image.Image, rng: np.random.Generator, lo: float, hi: float, path: Path) -> tuple[str, dict]:
    """A crop cutting a random share in [lo, hi) of the width and of the height, split at random
    between the two sides."""
    w, h = im.size
    fx, fy = rng.uniform(lo, hi, 2)
    lx, ly = rng.uniform(0, fx), rng.uniform(0, fy)
    box = (round(lx * w), round(ly * h), w - round((fx - lx) * w), h - round((fy - ly) * h))
    return _save(im.crop(box), path), {"cut_x": float(fx), "cut_y": float(fy)}


def plant(im: Image.Image, how: str, rng: np.random.Generator, path: Path) -> tuple[str, dict]:
    w, h = im.size
    if how == "resize":
        s = float(rng.uniform(0.3, 0.7))
        return _save(im.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BICUBIC), path), {"scale": s}
    if how == "jpeg":
        return _save(im, path.with_suffix(".jpg"), "JPEG", quality=70), {"quality": 70}
    if how in CROP_CUTS:
        return _cut(im, rng, *CROP_CUTS[how], path)
    if how == "flip":
        return _save(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), path), {}
    if how == "bright":
        f = float(rng.choice([0.8, 1.2]))
        return _save(ImageEnhance.Brightness(im.convert("RGB")).enhance(f), path), {"factor": f}
    if how == "rotate":
        a = float(rng.choice([-3.0, 3.0]))
        rot = im.convert("RGB").rotate(a, Image.Resampling.BICUBIC, expand=False, fillcolor=(255, 255, 255))
        return _save(rot, path), {"degrees": a}
    raise ValueError(f"unknown transform {how!r}; valid: {TRANSFORMS}")


def heldout_rows(root: str) -> list[dict]:
    """The held-out split of the openclipart corpus, exactly as `make demo`'s ingest makes it."""
    from pipeline.openclipart import scan_corpus, split_rows

    return split_rows(scan_corpus(root).rows, 0.2, 0).heldout


def build_case(rows: list[dict], n: int, out: Path, seed: int = 0) -> dict:
    """Writes out/eval.parquet, out/pretrain.parquet and the planted files from `rows` (image_id,
    image); returns the truth: {"eval_ids", "planted": {pretrain_id: (eval_id, transform)},
    "lookalikes": {pretrain_id: eval_id}}."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    out.mkdir(parents=True, exist_ok=True)
    chosen, renders = [], {}
    for i in order:  # the first n readable held-out images
        im = _render(rows[i]["image"])
        if im is not None:
            chosen.append(rows[i])
            renders[rows[i]["image_id"]] = im
        if len(chosen) == n:
            break
    chosen_ids = {r["image_id"] for r in chosen}
    digests = {_pixels_digest(im) for im in renders.values()}
    by_folder, by_cat = defaultdict(list), defaultdict(list)
    for r in rows:
        if r["image_id"] not in chosen_ids:
            by_folder[str(PurePosixPath(r["image_id"]).parent)].append(r)
            by_cat[r["image_id"].split("/")[0]].append(r)
    pre, planted, lookalikes, used = [], {}, {}, set()
    for k, r in enumerate(chosen):
        eid = r["image_id"]
        im = renders[eid]
        for how in TRANSFORMS:
            pid = f"planted/{how}/{k:04d}"
            path, _ = plant(im, how, rng, out / f"{how}_{k:04d}.png")
            pre.append({"image_id": pid, "image": path, "hashtags": ["planted"]})
            planted[pid] = (eid, how)
        pool = by_folder[str(PurePosixPath(eid).parent)] or by_cat[eid.split("/")[0]]
        for j in rng.permutation(len(pool)):
            cand = pool[j]
            if cand["image_id"] in used:
                continue
            other = _render(cand["image"])
            if other is None or _pixels_digest(other) in digests:
                continue
            used.add(cand["image_id"])
            pid = f"lookalike/{k:04d}"
            pre.append({"image_id": pid, "image": _save(other, out / f"lookalike_{k:04d}.png"),
                        "hashtags": ["lookalike"]})
            lookalikes[pid] = eid
            break
    schema = pa.schema([("image_id", pa.string()), ("image", pa.string()), ("hashtags", pa.list_(pa.string()))])
    pq.write_table(pa.Table.from_pylist(pre, schema), out / "pretrain.parquet")
    pq.write_table(pa.Table.from_pylist([{"image_id": r["image_id"], "image": r["image"]} for r in chosen]),
                   out / "eval.parquet")
    return {"eval_ids": sorted(chosen_ids), "planted": planted, "lookalikes": lookalikes}


def score(duplicates: list[dict], truth: dict, unjudged: set[str] = frozenset()) -> dict:
    """Recall per transform (a planted copy counts when it is matched to its own source) and the
    false positives: matched pairs that are not a planted copy with its source, split into
    look-alikes and other pairs (e.g. a planted copy of one image matched to another image)."""
    found = {(d["pretrain_id"], d["eval_id"]) for d in duplicates}
    recall = {}
    for how in TRANSFORMS:  # over evaluation images the job judges (not `unjudged`)
        pairs = [(pid, eid) for pid, (eid, h) in truth["planted"].items() if h == how and eid not in unjudged]
        recall[how] = sum(p in found for p in pairs) / len(pairs)
    true_pairs = {(pid, eid) for pid, (eid, _) in truth["planted"].items()}
    false = found - true_pairs
    la = {p for p in false if p[0] in truth["lookalikes"]}
    stars = {p for p in false if p[1].startswith(STAR_FAMILY)}
    return {"recall": recall, "unjudged_eval_images": len(unjudged), "false_positive_pairs": len(false), "false_positive_pairs_stars": len(stars),
            "false_positive_pairs_other": len(false) - len(stars), "lookalike_pairs_matched": len(la),
            "lookalikes_matched": len({p for p, _ in la}), "lookalikes": len(truth["lookalikes"]),
            "false_pairs": sorted(false)}
