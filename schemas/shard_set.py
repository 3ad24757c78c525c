"""A shard set's metadata, shards.json (jobs/shards.py OUT/shards.json): its one writer and reader.

Shards hold every stored image once. Stored images are numbered densely in shard order: shard i
holds images first_image .. first_image + images - 1, in file order; the FFCV file (`ffcv`) holds
the same images in the same order, so one number names an image in both formats.

    meta = ShardSetMeta.numbered(num_classes, [(name, images, bytes, sha256), ...], shard_size=...)
    (out / SHARD_SET_FILE).write_text(meta.to_json())
    meta = read_shard_set_meta(out)            # or ShardSetMeta.from_json(text, where)

A sample index binds to the bytes of this file (schemas/sample_index.py shard_set_sha256).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from schemas.metadata import MetadataError, dump, parse_versioned, read_text

SHARD_SET_FILE = "shards.json"
SHARD_SET_VERSION = 1


@dataclass(frozen=True)
class ShardEntry:
    """One tar of the set, as the shards job wrote it."""
    name: str          # file name inside the shard directory
    images: int        # stored images in it (>= 1)
    first_image: int   # number of its first stored image
    bytes: int         # file size
    sha256: str = ""   # of the file


@dataclass(frozen=True)
class ShardSetMeta:
    """shards.json. Validated on reading (from_json), not on building: tests build damaged ones."""
    num_classes: int
    images: int
    shards: tuple[ShardEntry, ...]
    shard_size: int | None = None      # images per shard the job was asked for
    max_side: int | None = None
    quality: int | None = None
    text: str | None = None            # the manifest column each sample's .json "text" came from, if any
    rejected_images: dict[str, int] | None = None  # per reject reason
    ffcv: dict | None = None           # {"file": "images.beton", "label_pad": L, ...} when written
    version: int = SHARD_SET_VERSION

    @classmethod
    def numbered(cls, num_classes: int, shards, **settings) -> ShardSetMeta:
        """From (name, images, bytes, sha256) per shard in order: first_image and images counted here."""
        entries, first = [], 0
        for name, images, size, sha256 in shards:
            entries.append(ShardEntry(name, images, first, size, sha256))
            first += images
        return cls(num_classes, first, tuple(entries), **settings)

    def to_dict(self) -> dict:
        return {**asdict(self), "shards": [asdict(s) for s in self.shards]}

    def to_json(self) -> str:
        return dump(self.to_dict())

    @classmethod
    def from_json(cls, text: str, where: str) -> ShardSetMeta:
        """Parse and check: required keys, names inside the directory, no empty shard, shards numbered
        densely from 0 and summing to `images`; a MetadataError naming `where` otherwise."""
        raw = parse_versioned(text, where, "shard set", SHARD_SET_VERSION)
        try:
            shards = tuple(ShardEntry(str(s["name"]), int(s["images"]), int(s["first_image"]), int(s["bytes"]),
                                      str(s.get("sha256", ""))) for s in raw["shards"])
            meta = cls(int(raw["num_classes"]), int(raw["images"]), shards, **{
                k: raw.get(k) for k in ("shard_size", "max_side", "quality", "text", "rejected_images", "ffcv")})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise MetadataError(f"{where} is unreadable or lacks num_classes/images/shards: {e!r}") from e
        meta.check(where)
        return meta

    def check(self, where: str) -> None:
        first = 0
        for s in self.shards:
            if s.images < 1:  # the shards job lists no empty shard: this file was edited or damaged
                raise MetadataError(f"{where}: shard {s.name} lists {s.images} images (an empty shard has no "
                                    "images to read); rerun jobs/shards.py")
            if "/" in s.name or "\\" in s.name or s.name in ("", ".", ".."):  # names stay inside the directory
                raise MetadataError(f"{where}: bad shard name {s.name!r}")
            if s.first_image != first:
                raise MetadataError(f"{where}: shard {s.name} starts at image {s.first_image}, expected {first}")
            first += s.images
        if first != self.images:
            raise MetadataError(f"{where}: shard images sum to {first}, not {self.images}")


def shard_set_file(root) -> Path:
    return Path(root) / SHARD_SET_FILE


def read_shard_set_meta(root) -> ShardSetMeta:
    """ROOT/shards.json of a local shard directory, checked (whether the job finished is the caller's)."""
    path = shard_set_file(root)
    return ShardSetMeta.from_json(read_text(path), str(path))
