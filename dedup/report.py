"""The dedup job's contamination report: counts, Markdown text, a contact sheet and inspection sheets (pure, no Spark).

The contact sheet shows matched pairs side by side (evaluation image left, pretraining image
right) so a person can judge them: the closest pairs, and the farthest ones still under the
threshold, which are where false positives would show first. An inspection sheet (WSL section 3:
a person looked at the k = 21 nearest training images of each test image) shows one evaluation
image and its nearest pretraining images in rank order, the matched ones framed in red, so a
person can mark the duplicates the threshold missed and the matches it should not have made.
"""
from __future__ import annotations

import io
from typing import Callable

import pyarrow as pa
from PIL import Image, ImageDraw

from pipeline.image_reader import read_image
from pipeline.images import ImageRejected, ImageSpec, prepare_image
from schemas import MANIFEST_ID

CELL = 112   # thumbnail box side
PAD = 6
CAPTION = 28
PAIRS_PER_ROW = 3


def eval_side_counts(ev_table: pa.Table, names: list[str]) -> dict:
    """Per evaluation set: images, unreadable by reason, variants, from the collected descriptors
    (every evaluation image has at least one row: its variants, or its reason)."""
    out = {n: {"images": 0, "unreadable": {}, "unreadable_total": 0, "variants": 0} for n in names}
    seen = set()
    for s, i, reason in zip(ev_table.column("eval_set").to_pylist(), ev_table.column(MANIFEST_ID).to_pylist(),
                            ev_table.column("reason").to_pylist()):
        o = out[s]
        if reason is None:
            o["variants"] += 1
        else:
            o["unreadable"][reason] = o["unreadable"].get(reason, 0) + 1
            o["unreadable_total"] += 1
        if (s, i) not in seen:
            seen.add((s, i))
            o["images"] += 1
    return out


def histogram_bin(d: float, decimals: int) -> int | str:
    """A distance histogram's key: whole Hamming bits, or a cosine distance to `decimals` places."""
    return int(round(d)) if decimals == 0 else f"{d:.{decimals}f}"


def pick_pairs(pairs: list[dict], limit: int) -> tuple[list[dict], list[dict]]:
    """(closest, farthest) pairs, disjoint, at most `limit` in all; `pairs` sorted by distance."""
    if len(pairs) <= limit:
        return pairs, []
    half = limit // 2
    return pairs[:limit - half], pairs[-half:]


def thumbnail(image, image_root: str | None) -> Image.Image | None:
    try:
        jpeg, _, _ = prepare_image(read_image(image, image_root), ImageSpec(max_side=CELL))
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


NEIGHBOURS_PER_ROW = 6
MATCHED = (200, 0, 0)
EVAL_FRAME = (0, 90, 200)


def neighbour_sheet(evaluation: dict, neighbours: list[dict], load: Callable[[object], Image.Image | None]) -> bytes:
    """PNG: the evaluation image (`evaluation`: eval_set, eval_id, eval_image; blue frame) then its
    `neighbours` (dicts with rank, pretrain_id, pretrain_image, distance, matched, flipped) in
    rank order, NEIGHBOURS_PER_ROW cells per row; matched neighbours framed in red."""
    cells = [("eval", evaluation)] + [("nb", n) for n in sorted(neighbours, key=lambda n: n["rank"])]
    rows = -(-len(cells) // NEIGHBOURS_PER_ROW)
    cw = CELL + PAD
    title = 18
    sheet = Image.new("RGB", (NEIGHBOURS_PER_ROW * cw + PAD, title + rows * (CELL + CAPTION + PAD) + PAD),
                      (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 4), f"{evaluation['eval_set']}:{evaluation['eval_id']}"[:110], fill=(0, 0, 0))
    for k, (what, c) in enumerate(cells):
        x = PAD + (k % NEIGHBOURS_PER_ROW) * cw
        y = title + PAD + (k // NEIGHBOURS_PER_ROW) * (CELL + CAPTION + PAD)
        frame = EVAL_FRAME if what == "eval" else (MATCHED if c["matched"] else (255, 255, 255))
        draw.rectangle([x - 2, y - 2, x + CELL + 1, y + CELL + 1], fill=frame)
        draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=(255, 255, 255))
        im = load(c["eval_image"] if what == "eval" else c["pretrain_image"])
        if im is None:
            draw.text((x + 4, y + CELL // 2), "unreadable", fill=MATCHED)
        else:
            sheet.paste(im, (x + (CELL - im.width) // 2, y + (CELL - im.height) // 2))
        if what == "eval":
            draw.text((x, y + CELL + 2), "evaluation", fill=EVAL_FRAME)
        else:
            draw.text((x, y + CELL + 2), f"#{c['rank']} d={fmt_distance(c['distance'])}"
                      + (" flip" if c.get("flipped") else "") + (" MATCH" if c["matched"] else ""),
                      fill=MATCHED if c["matched"] else (0, 0, 0))
            draw.text((x, y + CELL + 14), _short(c["pretrain_id"], 18), fill=(60, 60, 60))
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


def report_markdown(stats: dict, closest: list[dict], farthest: list[dict], inspected: list[dict] = ()) -> str:
    m, pc, ix = stats["matches"], stats["pair_check"], stats["index"]
    lines = [
        "# Near-duplicates of evaluation images in the pretraining manifest", "",
        f"Manifest `{stats['manifest']}`: {stats['pretrain']['images']} images, "
        f"{stats['pretrain']['unreadable_total']} unreadable or low-information (kept, not judged: "
        f"{stats['pretrain']['unreadable']}).",
        f"Method: {stats['method']['name']}, match when {stats['method']['rule']}; "
        f"evaluation images at {stats['eval_variants_per_image']} crop/flip variants; "
        f"searched in a {ix['name']}, {ix['probe']} nearest evaluation images kept per pretraining image.", "",
        "| evaluation set | images | unreadable | matched eval images | matched pretraining images |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in stats["eval"].items():
        lines.append(f"| {name} | {s['images']} | {s['unreadable_total']} | {s['matched_images']} "
                     f"| {s['matched_pretrain_images']} |")
    nb = stats.get("neighbours", {})
    lines += [
        "",
        f"- neighbour pairs reported by the index: {stats['neighbour_pairs']}",
        f"- pair check (aligned 16x16 luma thumbnails correlate >= {pc['min_correlation']}): "
        f"{pc['pairs_within_threshold']} pairs within the threshold, {pc['rejected']} rejected"
        f"{', ' + str(pc['unreadable_on_recheck']) + ' unreadable on recheck' if pc['unreadable_on_recheck'] else ''}",
        f"- matched pairs: {m['pairs']}; pretraining images removed: {m['pretrain_images_removed']}",
        f"- matched only through the mirrored evaluation image (flips): {m['flipped_pairs']}",
        f"- matched only through a crop of the evaluation image: {m['cropped_pairs']}",
        f"- distance histogram: {m['distance_histogram']}",
        f"- `neighbours.parquet`: {nb.get('rows', 0)} rows, the nearest pretraining images of "
        f"{nb.get('eval_images', 0)} evaluation images (up to {stats['config']['neighbours']} each)",
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
    if inspected:
        lines += ["## Inspection sheets", "",
                  "Each sheet shows an evaluation image (blue) and its nearest pretraining images in rank order; "
                  "matched ones are framed in red. Borderline matches (the farthest matched) and near misses "
                  "(the closest unmatched) come first: that is where a person's eye is needed. Every evaluation "
                  "image's list is in `neighbours.parquet`.", "",
                  "| sheet | evaluation image | nearest distance | matched neighbours |", "| --- | --- | ---: | ---: |"]
        for e in inspected:
            lines.append(f"| [{e['sheet']}]({e['sheet']}) | `{e['eval_set']}:{e['eval_id']}` "
                         f"| {fmt_distance(e['nearest'])} | {e['matched']} |")
        lines.append("")
    return "\n".join(lines)
