"""Downstream (transfer) datasets: an ImageFolder tree or WebDataset shards with a class field.

    ROOT/train/<class>/*.jpg|png|...   ROOT/val/<class>/*         (class names: the train folders)
    ROOT/train/*.tar                   ROOT/val/*.tar             (members KEY.jpg|png + KEY.cls)

Shards are read by pipeline/wds.py (layout "cls": the `.cls` is the class index as ASCII digits;
its policy: a damaged sample is an error naming shard:key, a sample without an image member is
skipped and counted); names come from ROOT/classes.txt (one per line, index order) when present,
else "0".."C-1". Shard bytes are read into memory (meant for downstream sets of up to a few
hundred thousand small images); pickle members are refused.
Images are decoded at full size by pipeline.images.decode_rgb, the decoder of the pretraining
shards: its format allow-list (image suffixes are its IMAGE_SUFFIXES), Pillow's
decompression-bomb guard, EXIF orientation, transparency composited on white; a file it refuses
is an error naming the file. Evaluation transform: resize the shorter side to the
resolution, then center crop (SWAG section 4.1); training: RandomResizedCrop + flip.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.images import IMAGE_SUFFIXES, ImageRejected, decode_rgb
from pipeline.wds import Skips, read_samples
from trainer.data.transforms import eval_transform, train_transform

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Split:
    """One split: `sources[i]` is a file path or (name, bytes); `labels[i]` its class index."""
    root: Path
    split: str
    classes: tuple[str, ...]
    sources: tuple
    labels: tuple[int, ...]
    skipped: int                  # files with a non-image suffix, ignored

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i: int) -> str:
        s = self.sources[i]
        return str(s) if isinstance(s, Path) else s[0]


def is_shards(directory: Path) -> bool:
    return any(directory.glob("*.tar"))


def load_split(root: str | Path, split: str) -> Split:
    """The `split` ("train" or "val") of a downstream dataset; errors name the offending path."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    root = Path(root)
    d = root / split
    if not d.is_dir():
        raise ValueError(f"{root}: no {split}/ directory (expected {split}/<class>/* or {split}/*.tar)")
    return _load_shards(root, split) if is_shards(d) else _load_folder(root, split)


def _load_folder(root: Path, split: str) -> Split:
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not classes:
        raise ValueError(f"{root}/train: no class folders")
    present = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise ValueError(f"{root}/{split}: class folders {unknown} are not in train/")
    sources, labels, skipped = [], [], 0
    for label, c in enumerate(classes):
        folder = root / split / c
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                sources.append(f)
                labels.append(label)
            else:
                skipped += 1
    if not sources:
        raise ValueError(f"{root}/{split}: no images")
    return Split(root, split, classes, tuple(sources), tuple(labels), skipped)


def _load_shards(root: Path, split: str) -> Split:
    """The split's `cls` samples (pipeline/wds.py: its parser and policy); classes from
    classes.txt, else as many as train's largest index says."""
    names_file = root / "classes.txt"
    classes = None
    if names_file.is_file():
        classes = tuple(x.strip() for x in names_file.read_text().splitlines() if x.strip())
    num_classes = len(classes) if classes is not None else None
    if classes is None and split != "train":
        num_classes = max(load_split(root, "train").labels) + 1
    sources, labels, no_image = [], [], Skips(warn=False)  # counted in Split.skipped
    for shard in sorted((root / split).glob("*.tar")):
        for sample in read_samples(shard, "cls", num_classes, handler=no_image):
            sources.append((sample.where, sample.image))
            labels.append(sample.cls)
    if not sources:
        raise ValueError(f"{root}/{split}: no images in its shards")
    if classes is None:
        classes = tuple(str(i) for i in range(num_classes or max(labels) + 1))
    return Split(root, split, classes, tuple(sources), tuple(labels), len(no_image))


def image_tensor(data: bytes, where: str) -> torch.Tensor:
    """uint8 [3, H, W] at full size, by the shards' decoder; ValueError naming `where` if refused."""
    try:
        rgb = decode_rgb(data, source=where)
    except ImageRejected as e:
        raise ValueError(f"cannot decode image {e}") from None
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)


class ImageSet(Dataset):
    """(uint8 [3, size, size], label) per image of a Split; train=True augments."""

    def __init__(self, split: Split, size: int, train: bool = False):
        self.split, self.transform = split, (train_transform(size) if train else eval_transform(size))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        s = self.split.sources[i]
        data = s.read_bytes() if isinstance(s, Path) else s[1]
        return self.transform(image_tensor(data, self.split.name(i))), self.split.labels[i]


def fingerprint(split: Split) -> str:
    """Changes when any file of the split (name, size, mtime) or its labels change."""
    h = hashlib.sha256(f"{split.split}|{','.join(split.classes)}".encode())
    for src, label in zip(split.sources, split.labels):
        if isinstance(src, Path):
            st = src.stat()
            h.update(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
        else:
            h.update(f"{src[0]}|{hashlib.sha256(src[1]).hexdigest()}|{label}\n".encode())
    return h.hexdigest()
