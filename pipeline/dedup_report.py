"""The dedup job's contamination report: Markdown text and a contact sheet PNG (pure, no Spark).

The sheet shows matched pairs side by side (evaluation image left, pretraining image right) so
a person can judge them: the closest pairs, and the farthest ones still under the threshold,
which are where false positives would show first.
"""
from __future__ import annotations

import io
from typing import Callable

from PIL import Image, ImageDraw

from pipeline.images import ImageRejected, ImageSpec, prepare_image, read_image_bytes

CELL = 112   # thumbnail box side
PAD = 6
CAPTION = 28
PAIRS_PER_ROW = 3


def pick_pairs(pairs: list[dict], limit: int) -> tuple[list[dict], list[dict]]:
    """(closest, farthest) pairs, disjoint, at most `limit` in all; `pairs` sorted by distance."""
    if len(pairs) <= limit:
        return pairs, []
    half = limit // 2
    return pairs[:limit - half], pairs[-half:]


def thumbnail(image, image_root: str | None) -> Image.Image | None:
    try:
        jpeg, _, _ = prepare_image(read_image_bytes(image, image_root), ImageSpec(max_side=CELL))
    except ImageRejected:
        return None
    im = Image.open(io.BytesIO(jpeg), formats=("JPEG",))  # prepare_image wrote it
    im.thumbnail((CELL, CELL))
    return im


def contact_sheet(pairs: list[dict], load: Callable[[object], Image.Image | None]) -> bytes:
    """PNG of `pairs` (dicts with eval_image, pretrain_image, eval_id, pretrain_id, distance,
    flipped, crop), PAIRS_PER_ROW pairs per row; `load` turns an image value into a thumbnail."""
    n = max(1, len(pairs))
    rows = -(-n // PAIRS_PER_ROW)
    pw = 2 * CELL + 3 * PAD
    sheet = Image.new("RGB", (PAIRS_PER_ROW * pw + PAD, rows * (CELL + CAPTION + PAD) + PAD), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for k, p in enumerate(pairs):
        x0 = PAD + (k % PAIRS_PER_ROW) * pw
        y0 = PAD + (k // PAIRS_PER_ROW) * (CELL + CAPTION + PAD)
        for j, key in enumerate(("eval_image", "pretrain_image")):
            x = x0 + j * (CELL + PAD)
            draw.rectangle([x, y0, x + CELL - 1, y0 + CELL - 1], fill=(255, 255, 255))
            im = load(p[key])
            if im is None:
                draw.text((x + 4, y0 + CELL // 2), "unreadable", fill=(200, 0, 0))
                continue
            sheet.paste(im, (x + (CELL - im.width) // 2, y0 + (CELL - im.height) // 2))
        how = (" flip" if p["flipped"] else "") + (" crop" if any(p["crop"]) else "")
        draw.text((x0, y0 + CELL + 2), f"#{k + 1} d={fmt_distance(p['distance'])} r={_fmt_r(p.get('correlation'))}{how}", fill=(0, 0, 0))
        draw.text((x0, y0 + CELL + 14), _short(p["eval_id"], 17) + " | " + _short(p["pretrain_id"], 17),
                  fill=(60, 60, 60))
    out = io.BytesIO()
    sheet.save(out, "PNG")
    return out.getvalue()


def _short(s: str, n: int) -> str:
    s = s.rsplit("/", 1)[-1]
    return s if len(s) <= n else s[:n - 1] + "~"


def _fmt_r(r) -> str:
    return "" if r is None else f"{r:.2f}"


def fmt_distance(d: float) -> str:
    """Hamming bits print as integers, cosine distances with three significant digits."""
    return f"{d:.3g}"


def report_markdown(stats: dict, closest: list[dict], farthest: list[dict]) -> str:
    m, pc = stats["matches"], stats["pair_check"]
    lines = [
        "# Near-duplicates of evaluation images in the pretraining manifest", "",
        f"Manifest `{stats['manifest']}`: {stats['pretrain']['images']} images, "
        f"{stats['pretrain']['unreadable_total']} unreadable or low-information (kept, not judged: "
        f"{stats['pretrain']['unreadable']}).",
        f"Method: {stats['method']['name']}, match when {stats['method']['rule']}; "
        f"evaluation images at {stats['eval_variants_per_image']} crop/flip variants; "
        f"candidates from {stats['method']['index']}.", "",
        "| evaluation set | images | unreadable | matched eval images | matched pretraining images |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in stats["eval"].items():
        lines.append(f"| {name} | {s['images']} | {s['unreadable_total']} | {s['matched_images']} "
                     f"| {s['matched_pretrain_images']} |")
    lines += [
        "",
        f"- candidate pairs (sharing an index key): {stats['candidate_pairs']} "
        f"of {stats['all_pairs']} possible ({stats['candidate_share']:.4%})",
        f"- pair check (aligned 16x16 luma thumbnails correlate >= {pc['min_correlation']}): "
        f"{pc['pairs_within_threshold']} pairs within the threshold, {pc['rejected']} rejected"
        f"{', ' + str(pc['unreadable_on_recheck']) + ' unreadable on recheck' if pc['unreadable_on_recheck'] else ''}",
        f"- matched pairs: {m['pairs']}; pretraining images removed: {m['pretrain_images_removed']}",
        f"- matched only through the mirrored evaluation image (flips): {m['flipped_pairs']}",
        f"- matched only through a crop of the evaluation image: {m['cropped_pairs']}",
        f"- distance histogram: {m['distance_histogram']}",
        "",
    ]
    for title, pairs, first in (("Closest matched pairs", closest, 1),
                                ("Farthest matched pairs (closest to the threshold)", farthest, len(closest) + 1)):
        if not pairs:
            continue
        lines += [f"## {title}", "", "| # | distance | r | eval | pretraining | flip | crop |", "| ---: | ---: | ---: | --- | --- | --- | --- |"]
        for k, p in enumerate(pairs, first):
            crop = ",".join(f"{c:.3f}" for c in p["crop"]) if any(p["crop"]) else ""
            lines.append(f"| {k} | {fmt_distance(p['distance'])} | {_fmt_r(p.get('correlation'))} "
                         f"| `{p['eval_set']}:{p['eval_id']}` | `{p['pretrain_id']}` "
                         f"| {'yes' if p['flipped'] else ''} | {crop} |")
        lines.append("")
    if closest:
        lines += ["![contact sheet: evaluation image left, pretraining image right](contact_sheet.png)", ""]
    return "\n".join(lines)
