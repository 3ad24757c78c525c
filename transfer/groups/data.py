"""Image sets with group columns, read in their published layouts (`layout=`), and group ids.

    folder         ROOT/<name>/*.png|jpg...: column `folder` (e.g. the held-out openclipart
                   categories, build/demo/downstream/val); the folder is also the image's label
    utkface        ROOT/[age]_[gender]_[race]_[date].jpg (UTKFace's file names): columns age,
                   age_bucket, gender (0 male, 1 female), race (0 White, 1 Black, 2 Asian,
                   3 Indian, 4 Others); a name not in that form is counted and skipped
    dollar_street  ROOT/images_v2.csv of MLCommons' Dollar Street release (id, country.name,
                   region.id, topics, place, income, imageRelPath), images at ROOT/imageRelPath
                   (or data= the CSV itself): columns country, region, income, income_bucket,
                   household (the place), labels (the topics)
    casual_conversations  a JSON list of face crops, one object per crop with img_path (relative to
                   the JSON's folder), age, gender and skin-type (Fitzpatrick 1-6): the metadata
                   VISSL's fairness indicators read (Casual Conversations ships videos; the crops
                   are yours): columns age, age_bucket, gender, skin_type, skin_tone (1-3 lighter,
                   4-6 darker, as VISSL)
    miap           OpenImages MIAP's boxes CSV (open_images_extended_miap_boxes_*.csv: ImageID,
                   GenderPresentation, AgePresentation, ...), images at <the CSV's folder>/
                   <ImageID>.jpg: columns gender (female / male / gender_unknown, as VISSL),
                   age (young / middle / older / unknown). The analyses score whole images, so
                   only images with one person box are read; the others are counted and skipped
    table          a CSV or Parquet file with an `image` column (a path, relative to the file's
                   folder) and any group columns (skin tone, country, ...); `labels`, if present,
                   holds an image's labels as a JSON list or `|`-separated; an `income` column
                   (monthly USD) gets its `income_bucket` as for Dollar Street

Groups are one column or several joined by "+" (`group=gender+race`: "1/2"). An image with no
value in a group column is excluded and counted; so are the images of a group with fewer than
`min_group_size` images (or households): both reported, never silently dropped.
"""
from __future__ import annotations

import ast
import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.images import IMAGE_SUFFIXES
from transfer.groups.metrics import income_bucket

UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_\d+")
AGE_BUCKETS = ((0, "0-17"), (18, "18-29"), (30, "30-44"), (45, "45-69"), (70, "70+"))
DOLLAR_STREET = {"country": "country.name", "region": "region.id", "household": "place", "income": "income",
                 "labels": "topics", "image": "imageRelPath"}


@dataclass(frozen=True)
class ImageTable:
    """sources[i]: image file; columns[name][i]: its value (None where missing); skipped: files or
    rows not read, by reason."""
    sources: tuple[Path, ...]
    columns: dict
    skipped: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sources)

    def column(self, name: str) -> list:
        if name not in self.columns:
            raise ValueError(f"no column {name!r} in this image set; columns: {', '.join(sorted(self.columns))}")
        return list(self.columns[name])

    def labels(self) -> list[list[str]]:
        """Each image's label names (`labels` column; a folder's name for layout=folder)."""
        return [list(v or []) for v in self.column("labels")]


def age_bucket(age: int) -> str:
    return [name for low, name in AGE_BUCKETS if age >= low][-1]


def read_folder(root: Path) -> ImageTable:
    if not root.is_dir():
        raise ValueError(f"data={root}: layout=folder needs a directory of <group>/ folders")
    sources, names, skipped = [], [], 0
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                sources.append(f)
                names.append(d.name)
            else:
                skipped += 1
    return ImageTable(tuple(sources), {"folder": names, "labels": [[n] for n in names]},
                      {"not an image": skipped} if skipped else {})


def read_utkface(root: Path) -> ImageTable:
    if not root.is_dir():
        raise ValueError(f"data={root}: layout=utkface needs UTKFace's image directory")
    sources, cols, bad = [], {"age": [], "age_bucket": [], "gender": [], "race": []}, 0
    for f in sorted(root.iterdir()):
        m = UTK_NAME.match(f.name)
        if not (f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and m):
            bad += 1
            continue
        sources.append(f)
        age = int(m.group(1))
        for k, v in (("age", age), ("age_bucket", age_bucket(age)), ("gender", m.group(2)), ("race", m.group(3))):
            cols[k].append(v)
    return ImageTable(tuple(sources), cols, {"name not [age]_[gender]_[race]_[date]": bad} if bad else {})


def skin_tone(skin_type) -> str | None:
    """Fitzpatrick type 1-3 -> lighter, 4-6 -> darker (VISSL's two tones); None otherwise."""
    try:
        t = int(skin_type)
    except (TypeError, ValueError):
        return None
    return "lighter" if 1 <= t <= 3 else "darker" if 4 <= t <= 6 else None


def read_casual_conversations(path: Path) -> ImageTable:
    if path.is_dir() or path.suffix != ".json":
        raise ValueError(f"data={path}: layout=casual_conversations needs the face crops' JSON metadata file")
    items = json.loads(path.read_text())
    if not isinstance(items, list) or not all(isinstance(i, dict) and "img_path" in i for i in items):
        raise ValueError(f"{path}: expected a JSON list of objects with img_path, age, gender, skin-type")
    sources, cols, absent = [], {k: [] for k in ("age", "age_bucket", "gender", "skin_type", "skin_tone")}, 0
    for i in items:
        f = path.parent / str(i["img_path"])
        if not f.is_file():
            absent += 1
            continue
        sources.append(f)
        age = int(i["age"]) if str(i.get("age", "")).isdigit() else None
        gender = str(i["gender"]).lower() if i.get("gender") not in (None, "") else None
        for k, v in (("age", age), ("age_bucket", None if age is None else age_bucket(age)), ("gender", gender),
                     ("skin_type", i.get("skin-type")), ("skin_tone", skin_tone(i.get("skin-type")))):
            cols[k].append(v)
    if not sources:
        raise ValueError(f"{path}: none of its {len(items)} images exists under {path.parent}")
    return ImageTable(tuple(sources), cols, {"image file missing": absent} if absent else {})


MIAP_GENDER = {"feminine": "female", "masculine": "male", "unknown": "gender_unknown"}


def read_miap(path: Path) -> ImageTable:
    rows = _read_rows(path) if path.is_file() else []
    need = ("ImageID", "GenderPresentation", "AgePresentation")
    if not rows or any(c not in rows[0] for c in need):
        raise ValueError(f"data={path}: layout=miap needs MIAP's boxes CSV with columns {', '.join(need)}")
    boxes: dict[str, list[dict]] = {}
    for r in rows:
        boxes.setdefault(r["ImageID"], []).append(r)
    sources, cols, skipped = [], {"gender": [], "age": []}, {"several person boxes": 0, "image file missing": 0}
    for image_id in sorted(boxes):
        f = path.parent / f"{image_id}.jpg"
        if len(boxes[image_id]) > 1 or not f.is_file():
            skipped["several person boxes" if len(boxes[image_id]) > 1 else "image file missing"] += 1
            continue
        box = boxes[image_id][0]
        gender = MIAP_GENDER.get(str(box["GenderPresentation"]).lower().split()[-1]) \
            if box["GenderPresentation"] else None
        sources.append(f)
        cols["gender"].append(gender)
        cols["age"].append(str(box["AgePresentation"]).lower() or None)
    if not sources:
        raise ValueError(f"{path}: no image with one person box exists under {path.parent} ({skipped})")
    return ImageTable(tuple(sources), cols, {k: v for k, v in skipped.items() if v})


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _label_list(v) -> list[str]:
    """A labels cell: a list, a JSON / Python list literal ("['home', 'kitchen']"), or a|b|c."""
    if v is None or v == "":
        return []
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    s = str(v).strip()
    if s.startswith("["):
        try:
            return [str(x) for x in json.loads(s)]
        except json.JSONDecodeError:
            return [str(x) for x in ast.literal_eval(s)]
    return [x.strip() for x in s.split("|") if x.strip()]


def read_table(path: Path, rename: dict | None = None) -> ImageTable:
    """Rows of a CSV/Parquet file; `rename`: our column -> the file's (Dollar Street's names)."""
    rows = _read_rows(path)
    rename = rename or {}
    image_col = rename.get("image", "image")
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in [image_col, *rename.values()] if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; it has {', '.join(rows[0])}")
    theirs_to_ours = {v: k for k, v in rename.items()}
    sources, cols, absent = [], {}, 0
    names = [theirs_to_ours.get(c, c) for c in rows[0] if c != image_col]
    for r in rows:
        f = path.parent / str(r[image_col])
        if not f.is_file():
            absent += 1
            continue
        sources.append(f)
        for c in rows[0]:
            if c != image_col:
                v = r[c]
                cols.setdefault(theirs_to_ours.get(c, c), []).append(None if v == "" else v)
    if not sources:
        raise ValueError(f"{path}: none of its {len(rows)} images exists under {path.parent}")
    cols = {n: cols.get(n, []) for n in names}
    if "labels" in cols:
        cols["labels"] = [_label_list(v) for v in cols["labels"]]
    if "income" in cols and "income_bucket" not in cols:
        cols["income"] = [None if v is None else float(v) for v in cols["income"]]
        known = [v for v in cols["income"] if v is not None]
        buckets = iter(income_bucket(known).tolist() if known else [])
        cols["income_bucket"] = [None if v is None else next(buckets) for v in cols["income"]]
    return ImageTable(tuple(sources), cols, {"image file missing": absent} if absent else {})


def read_dollar_street(path: Path) -> ImageTable:
    return read_table(path / "images_v2.csv" if path.is_dir() else path, DOLLAR_STREET)


LAYOUTS = {"folder": read_folder, "utkface": read_utkface, "dollar_street": read_dollar_street,
           "casual_conversations": read_casual_conversations, "miap": read_miap, "table": read_table}


def read_images(data: str, layout: str) -> ImageTable:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    p = Path(data)
    if not p.exists():
        raise ValueError(f"data={data}: no such file or directory")
    return LAYOUTS[layout](p)


def group_values(table: ImageTable, spec: str) -> list[str | None]:
    """The group of each image: one column, or several joined by "+" (values joined by "/");
    None where any of them is missing."""
    cols = [table.column(c) for c in spec.split("+")]
    return [None if any(v is None for v in vs) else "/".join(str(v) for v in vs) for vs in zip(*cols)]


@dataclass(frozen=True)
class Groups:
    ids: np.ndarray               # [N] group index, -1 where the image is excluded
    names: tuple[str, ...]        # kept groups, sorted
    sizes: tuple[int, ...]        # images per kept group
    excluded: dict                # {"missing value": n images, "small groups": {name: size}}


def group_index(values: list, min_size: int = 1, units=None) -> Groups:
    """Group ids from group values. A group below `min_size` images (or distinct `units`, e.g.
    households, when given) is excluded with its images; ValueError when no group is left."""
    missing = sum(v is None for v in values)
    names = sorted({v for v in values if v is not None})
    size = {n: 0 for n in names}
    unit_sets = {n: set() for n in names}
    for i, v in enumerate(values):
        if v is not None:
            size[v] += 1
            unit_sets[v].add(units[i] if units is not None else i)
    small = {n: len(unit_sets[n]) for n in names if len(unit_sets[n]) < min_size}
    kept = [n for n in names if n not in small]
    if not kept:
        raise ValueError(f"no group has at least {min_size} {'units' if units is not None else 'images'}: "
                         f"{small or 'every image lacks a group value'}")
    index = {n: g for g, n in enumerate(kept)}
    ids = np.array([index.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)
    excluded = {"missing value": missing, "small groups": small}
    return Groups(ids, tuple(kept), tuple(size[n] for n in kept), excluded)
