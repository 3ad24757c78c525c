"""The openclipart held-out images as a labelled downstream task (an ImageFolder tree of JPEGs).

    python -m transfer.heldout_task heldout=build/demo/heldout.parquet out=build/demo/downstream \
        [val_frac=0.3 min_per_class=10 max_side=256 seed=0]

Each held-out image is labelled by its top-level category folder (`unsorted` excluded). The split
is seeded and per class; classes with fewer than min_per_class images are dropped (counted).
Copies of one picture (Debian links identical PNGs, sometimes across categories) share a group
and always land on the same side, so no picture is in both train and val. Images are decoded by
pipeline.images (Pillow's bomb guard on, transparency on white) into RGB JPEGs; unreadable ones
are skipped and counted by reason. Output: OUT/train/<class>/*.jpg, OUT/val/<class>/*.jpg and
OUT/task.json (classes, counts, dropped classes, rejects); the tree is filled under a temporary
name and renamed into place (pipeline.atomic).
"""
from __future__ import annotations

import json
import os
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.atomic import atomic_dir
from pipeline.cli import key, load_config
from pipeline.image_reader import iter_images, redact
from pipeline.images import ImageRejected, ImageSpec, prepare_image
from pipeline.openclipart import UNSORTED_CATEGORY


def split_task(rows: list[tuple[str, str, str]], val_frac: float, min_per_class: int,
               seed: int) -> tuple[dict[str, str], dict[str, int]]:
    """rows: (item_id, class, group). Returns ({item_id: 'train'|'val'}, {dropped class: images}).

    Classes are visited in sorted order; a class's groups not yet placed are permuted with a
    generator seeded by (seed, class) and the first ones go to val until the class holds
    round(val_frac * groups) val groups (at least 1, and at least 1 group left for train).
    A group keeps the side it got first, so a group shared by two classes is never split.
    """
    if not 0 < val_frac < 1:
        raise ValueError(f"val_frac must be in (0, 1), got {val_frac}")
    if min_per_class < 2:
        raise ValueError(f"min_per_class must be >= 2 (one train and one val image), got {min_per_class}")
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"duplicate item id {dup!r}")
    per_class = Counter(r[1] for r in rows)
    dropped = {c: n for c, n in sorted(per_class.items()) if n < min_per_class}
    groups_of: dict[str, set[str]] = defaultdict(set)
    for _, c, g in rows:
        if c not in dropped:
            groups_of[c].add(g)
    side: dict[str, str] = {}
    for c in sorted(groups_of):
        groups = sorted(groups_of[c])
        if len(groups) < 2:
            raise ValueError(f"class {c!r}: all its images are copies of one picture; cannot split it")
        want = min(len(groups) - 1, max(1, round(val_frac * len(groups))))
        have = sum(side.get(g) == "val" for g in groups)
        free = [groups[i] for i in np.random.default_rng([seed, zlib.crc32(c.encode())]).permutation(len(groups))
                if groups[i] not in side]
        for g in free:
            side[g] = "val" if have < want else "train"
            have += side[g] == "val"
    return {i: side[g] for i, c, g in rows if c not in dropped}, dropped


def file_name(image_id: str) -> str:
    """A flat, safe file name for an image id such as 'animals/birds/gull_01'."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in image_id.replace("/", "__"))
    return safe.lstrip(".")[:180] + ".jpg"


def read_heldout(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = {"image_id", "image", "category"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return [r for r in table.select(["image_id", "image", "category"]).to_pylist()
            if r["category"] and r["category"] != UNSORTED_CATEGORY]


def build_task(heldout: Path, out: Path, val_frac: float = 0.3, min_per_class: int = 10, seed: int = 0,
               max_side: int = 256) -> dict:
    rows = read_heldout(heldout)
    # copies of one picture share a group: the file a link resolves to
    items = [(r["image_id"], r["category"], os.path.realpath(r["image"])) for r in rows]
    assign, dropped = split_task(items, val_frac, min_per_class, seed)
    spec = ImageSpec(max_side=max_side)
    counts: dict[str, Counter] = defaultdict(Counter)
    rejects, examples = Counter(), []
    with atomic_dir(out) as tmp:
        kept = [r for r in rows if r["image_id"] in assign]
        for r, (data, _) in tqdm(zip(kept, iter_images([r["image"] for r in kept])), total=len(kept),
                                 desc="held-out images", unit="img", mininterval=2):
            split = assign[r["image_id"]]
            try:
                if isinstance(data, ImageRejected):
                    raise data
                jpeg, _, _ = prepare_image(data, spec)
            except ImageRejected as e:
                rejects[e.reason] += 1
                if len(examples) < 10:
                    examples.append({"image_id": r["image_id"], "image": redact(r["image"]), "reason": str(e)})
                continue
            d = tmp / split / r["category"]
            d.mkdir(parents=True, exist_ok=True)
            (d / file_name(r["image_id"])).write_bytes(jpeg)
            counts[r["category"]][split] += 1
        empty = sorted(c for c in counts if not counts[c]["train"] or not counts[c]["val"])
        if empty or not counts:
            raise ValueError(f"{heldout}: after unreadable images were skipped, classes {empty} have an empty split"
                             if counts else f"{heldout}: no class has {min_per_class} readable images")
        stats = {"heldout": str(heldout), "seed": seed, "val_frac": val_frac, "min_per_class": min_per_class,
                 "max_side": max_side, "classes": sorted(counts),
                 "images": {c: {"train": counts[c]["train"], "val": counts[c]["val"]} for c in sorted(counts)},
                 "train": sum(c["train"] for c in counts.values()), "val": sum(c["val"] for c in counts.values()),
                 "dropped_classes": dropped, "unreadable": dict(rejects), "unreadable_examples": examples}
        (tmp / "task.json").write_text(json.dumps(stats, indent=2))
    return stats


def summary(stats: dict) -> str:
    lines = [f"downstream task: {len(stats['classes'])} classes, {stats['train']} train / {stats['val']} val images"]
    lines += [f"  {c:<20} {n['train']:>5} train {n['val']:>5} val" for c, n in stats["images"].items()]
    if stats["dropped_classes"]:
        lines.append(f"  dropped (< {stats['min_per_class']} images): " +
                     ", ".join(f"{c} ({n})" for c, n in stats["dropped_classes"].items()))
    lines.append(f"  unreadable images skipped: {sum(stats['unreadable'].values())} {stats['unreadable']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class HeldoutTaskConfig:
    heldout: str = key(help="heldout.parquet of jobs/ingest_openclipart.py")
    out: str = key(help="output directory: train/, val/, task.json (filled under a temporary name)")
    val_frac: float = key(0.3, "share of each class's picture groups in val")
    min_per_class: int = key(10, "classes with fewer images are dropped (counted)")
    max_side: int = key(256, "longest side of the JPEGs written, in pixels")
    seed: int = key(0, "seed of the split")


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(HeldoutTaskConfig, argv, "transfer.heldout_task", __doc__)
    stats = build_task(Path(cfg.heldout), Path(cfg.out), cfg.val_frac, cfg.min_per_class, cfg.seed, cfg.max_side)
    print(summary(stats))
    return stats


if __name__ == "__main__":
    main()
