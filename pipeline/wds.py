"""WebDataset tar shards and their sample: the one writer, parser, validation policy and decoder.

A sample is a key's tar members, side by side, named `<key>.<extension>` (the key is a member's
name up to its first '.'), in one of two layouts:

    json   <key>.jpg + <key>.json      pretraining shards (jobs/shards.py). The .json is an object:
           "labels" a non-empty list of ints (in [0, num_classes) when the reader knows it),
           "image_id" and "text" strings when present, "tail". Read by the trainer's WebDataset
           loader (pretraining, SwAV's multi-crop, MAE), LiT's embedding pass and the FFCV writer.
    cls    <key>.<image> + <key>.cls   downstream (transfer) shards. The .cls is the class index in
           ASCII digits; the image member is the first of CLS_IMAGE_MEMBERS present (jpg first);
           other members are ignored.

write_shard writes Samples deterministically (tar headers carry no time, owner or mode of this
machine: the same samples always give the same bytes and sha256) and atomically; read_samples
parses them back (parse_sample); decode gives a sample's pixels by pipeline.images.decode_rgb,
the one decoder (its format allow-list, Pillow's decompression-bomb guard, EXIF orientation, sRGB).

What a damaged sample does, the same for every reader:
- The tar itself (an unsafe member, a truncated or unreadable tar): ShardError naming the shard
  and the member, always (pipeline/tar_members.py).
- Structure (STRUCTURAL): a key without its layout's members (json: exactly .jpg and .json), a
  member twice, a key whose members are not side by side, a .json that is not the object above,
  labels outside [0, num_classes), a .cls that is not a class index: SampleError naming
  'shard:key' and what is wrong, always. Such a shard is not what write_shard wrote, and dropping
  the sample would renumber every later stored image (shards.json and the sample index count
  them).
- Content (HANDLED): an image that does not decode ("image"); a cls sample without an image
  member ("no_image", as a folder's non-image file). The caller's `handler` decides, webdataset's
  handler= style: Skips (the default) drops the sample, counting it by reason and naming it, and
  logs it unless told the caller reports it; `stop` raises the SampleError. The trainer's loader
  stops, or with skip_bad_images (the trainer's) passes a Skips per batch: each skip named in
  batch.skipped, counted over the run, at most max_bad_samples. LiT skips and counts ("bad" in its
  pairs' stats); the FFCV writer stops (FFCV cannot skip inside its pipeline); transfer counts
  samples without an image (Split.skipped) and stops on an image that does not decode (one
  ImageSet for folders and shards: transfer/downstream.image_tensor, the same decoder).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.images import IMAGE_SUFFIXES, ImageRejected, decode_rgb
from pipeline.tar_members import ShardError, add_member, iter_members, member_spans

LAYOUTS = ("json", "cls")
CLS_IMAGE_MEMBERS = tuple(s[1:] for s in IMAGE_SUFFIXES)  # jpg first: a cls sample's first image member wins
STRUCTURAL = ("members", "meta", "labels")  # always a SampleError
HANDLED = ("image", "no_image")  # the handler's to decide
log = logging.getLogger("wds")
T = TypeVar("T")


class SampleError(ShardError):
    """A damaged sample: the message names 'shard:key'; `reason` is one of STRUCTURAL or HANDLED.
    (One message argument, so a DataLoader worker's error is re-raised with its type.)"""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


Handler = Callable[[SampleError], None]


def stop(error: SampleError) -> None:
    """The handler that stops the reader: the error is raised."""
    raise error


class Skips:
    """The default handler: the sample is dropped, named (`names`) and counted by reason
    (`by_reason`); logged as a warning unless `warn=False` (a caller that reports them itself)."""

    def __init__(self, warn: bool = True):
        self.warn, self.names, self.by_reason = warn, [], Counter()

    def __call__(self, error: SampleError) -> None:
        self.names.append(str(error))
        self.by_reason[error.reason] += 1
        if self.warn:
            log.warning("skipped a sample: %s", error)

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Sample:
    """One sample: its key and image bytes, and its .json object (layout json) or its class
    (layout cls). `where` ('shard:key') is set on samples read back."""
    key: str
    image: bytes
    meta: dict | None = None
    cls: int | None = None
    image_ext: str = "jpg"
    where: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.key or "." in self.key:
            raise ValueError(f"sample key {self.key!r}: empty, or holding a '.' (a key is a member's name up to "
                             "its first '.')")
        if (self.meta is None) == (self.cls is None):
            raise ValueError(f"sample {self.key!r}: give meta (layout json) or cls (layout cls), one of them")
        allowed = ("jpg",) if self.meta is not None else CLS_IMAGE_MEMBERS
        if self.image_ext not in allowed:
            raise ValueError(f"sample {self.key!r}: image member .{self.image_ext}; layout {self.layout} takes "
                             f"{', '.join('.' + e for e in allowed)}")

    @property
    def layout(self) -> str:
        return "json" if self.meta is not None else "cls"

    @property
    def labels(self) -> list[int]:
        return self.meta["labels"]

    @property
    def text(self) -> str:
        return self.meta.get("text", "")

    @property
    def image_id(self) -> str:
        return self.meta.get("image_id", self.key)

    def members(self) -> list[tuple[str, bytes]]:
        """Its tar members, (name, bytes), in the order write_shard writes them."""
        if self.meta is not None:
            tail = ("json", json.dumps(self.meta, sort_keys=True).encode())
        else:
            tail = ("cls", str(self.cls).encode())
        return [(f"{self.key}.{self.image_ext}", self.image), (f"{self.key}.{tail[0]}", tail[1])]


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def write_shard(path: str | os.PathLike, samples: Iterable[Sample]) -> dict:
    """Write `samples` to `path` atomically; {samples, bytes, sha256}.

    The tar is written under a unique temporary name and renamed, so a killed or duplicated
    (speculative) writer never leaves a partial file under the final name.
    """
    n = 0
    with atomic_path(path, fsync=True) as tmp:
        with open(tmp, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for sample in samples:
                    for name, data in sample.members():
                        add_member(tar, name, data)
                    n += 1
        digest = file_sha256(tmp)
        size = tmp.stat().st_size
    return {"samples": n, "bytes": size, "sha256": digest}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_shard(path: str | os.PathLike, fileobj=None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample, in file order, unparsed. The file is read once,
    sequentially (works on streams without seeking); unsafe members raise ShardError, a key whose
    members are not side by side a SampleError."""
    shard = str(path)
    with (open(shard, "rb") if fileobj is None else contextlib.nullcontext(fileobj)) as f:
        yield from _group(shard, iter_members(shard, f))


def read_samples(path: str | os.PathLike, layout: str = "json", num_classes: int | None = None,
                 handler: Handler | None = None, fileobj=None) -> Iterator[Sample]:
    """The shard's samples, parsed and validated (parse_sample), in file order. Structural damage
    raises; a HANDLED one goes to `handler` (default: a Skips that logs) and the sample is left out."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown sample layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    handler = Skips() if handler is None else handler
    for key, members in iter_shard(path, fileobj):
        try:
            sample = parse_sample(key, members, f"{path}:{key}", layout, num_classes)
        except SampleError as e:
            _handle(e, handler)
            continue
        yield sample


def parse_sample(key: str, members: dict[str, bytes], where: str, layout: str = "json",
                 num_classes: int | None = None) -> Sample:
    """A Sample from one key's members, validated by its layout (module docstring); damage is a
    SampleError naming `where` ('shard:key') and its reason."""
    if layout == "cls":
        return _parse_cls(key, members, where, num_classes)
    if set(members) != {"jpg", "json"}:
        raise SampleError(f"{where}: expected members .jpg and .json, found {sorted(members)} (a member missing, "
                          "or the key's members not side by side in the tar)", "members")
    try:
        meta = json.loads(members["json"])
    except ValueError as e:  # not JSON, or not UTF-8
        raise SampleError(f"{where}: bad metadata: {e!r}", "meta") from None
    problem = _meta_problem(meta)
    if problem:
        raise SampleError(f"{where}: bad metadata: {problem}", "meta")
    labels = meta["labels"]
    if not labels or min(labels) < 0 or (num_classes is not None and max(labels) >= num_classes):
        raise SampleError(f"{where}: labels {labels} empty or outside [0, {'...' if num_classes is None else num_classes})", "labels")
    return Sample(key, members["jpg"], meta=meta, where=where)


def _meta_problem(meta) -> str | None:
    if not isinstance(meta, dict):
        return f"not a JSON object but {type(meta).__name__}"
    labels = meta.get("labels")
    if not isinstance(labels, list) or not all(type(x) is int for x in labels):
        return f"labels must be a list of integers, got {str(labels)[:80]}"
    for k in ("image_id", "text"):
        if k in meta and not isinstance(meta[k], str):
            return f"{k} must be a string, got {type(meta[k]).__name__}"
    return None


def _parse_cls(key: str, members: dict[str, bytes], where: str, num_classes: int | None) -> Sample:
    if "cls" not in members:
        raise SampleError(f"{where}: no .cls member", "members")
    try:
        cls = int(members["cls"].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise SampleError(f"{where}: .cls is not an integer: {members['cls'][:20]!r}", "meta") from None
    if cls < 0 or (num_classes is not None and cls >= num_classes):
        raise SampleError(f"{where}: class {cls} outside [0, {'...' if num_classes is None else num_classes})", "labels")
    ext = next((e for e in CLS_IMAGE_MEMBERS if e in members), None)
    if ext is None:
        raise SampleError(f"{where}: no image member beside its .cls (found {sorted(members)})", "no_image")
    return Sample(key, members[ext], cls=cls, image_ext=ext, where=where)


def decode(sample: Sample, handler: Handler | None = None) -> np.ndarray | None:
    """uint8 [H, W, 3]: the sample's image at full size, by pipeline.images.decode_rgb. An image it
    refuses goes to `handler` (default: a Skips that logs) as SampleError "image" ('shard:key:
    cannot decode image: reason: detail'); None when the handler lets it go."""
    try:
        return np.array(decode_rgb(sample.image))
    except ImageRejected as e:
        _handle(SampleError(f"{sample.where or sample.key}: cannot decode image: {e}", "image"),
                Skips() if handler is None else handler)
        return None


def _handle(error: SampleError, handler: Handler) -> None:
    """The one policy: structural damage always raises, the rest is the handler's."""
    if error.reason not in HANDLED:
        raise error
    handler(error)


def locate_samples(path: str | os.PathLike) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """(key, {extension: (offset, size)}) per sample of an uncompressed shard, in file order:
    random access without reading the members (read_located reads one back)."""
    shard = str(path)
    return list(_group(shard, member_spans(shard)))


def read_located(path: str | os.PathLike, key: str, spans: dict[str, tuple[int, int]], layout: str = "json",
                 num_classes: int | None = None) -> Sample:
    """parse_sample of the sample at `spans` (locate_samples); any damage raises."""
    members = {}
    with open(path, "rb") as f:
        for ext, (offset, size) in spans.items():
            f.seek(offset)
            members[ext] = f.read(size)
    return parse_sample(key, members, f"{path}:{key}", layout, num_classes)


def _group(shard: str, members: Iterable[tuple[str, T]]) -> Iterator[tuple[str, dict[str, T]]]:
    """A tar's (name, payload) members as (key, {extension: payload}), keys in file order."""
    current, parts, seen = None, {}, set()
    for name, payload in members:
        key, _, ext = name.partition(".")
        if key != current:
            if current is not None:
                yield current, parts
            if key in seen:
                raise SampleError(f"{shard}:{key}: the key's members are not side by side in the tar (the key comes "
                                  "again after another key)", "members")
            seen.add(key)
            current, parts = key, {}
        if ext in parts:
            raise SampleError(f"{shard}:{key}: member {name!r} appears twice", "members")
        parts[ext] = payload
    if current is not None:
        yield current, parts
