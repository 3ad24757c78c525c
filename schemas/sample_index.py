"""A sample index's metadata, index.json: its one writer and reader, and the index's layout.

`jobs/resample.py --shards DIR --out OUT` writes the sample index under OUT/index/ (the trainer's
`sample_index=OUT`):
- index.json (SampleIndexMeta): the epochs, the sha256 of the shard set's shards.json bytes it
  was drawn for, kept and rejected samples per epoch, the shard set's path and each epoch's seed;
- epoch-NNNNN/ (Parquet): (image, position) per sample of epoch N, sorted by image; epoch N drew
  samples[N] + rejected_samples[N] samples at positions 0.., less the rejected ones. Epochs may
  differ in length (rejections; `--strategy metaclip` keeps a random number per draw): a reader
  takes each epoch's own count;
- shard_samples.parquet: (epoch, shard, samples).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from schemas.metadata import MetadataError, dump, parse_versioned, read_text

SAMPLE_INDEX_VERSION = 1
INDEX_DIR = "index"  # under jobs/resample.py's OUT
INDEX_FILE = "index.json"
SHARD_SAMPLES = "shard_samples.parquet"


def epoch_dir_name(epoch: int) -> str:
    return f"epoch-{epoch:05d}"


def shard_set_sha256(shards_json: bytes | str) -> str:
    """What a sample index binds to: the sha256 of its shard set's shards.json, as the file's bytes."""
    return hashlib.sha256(shards_json.encode() if isinstance(shards_json, str) else shards_json).hexdigest()


@dataclass(frozen=True)
class SampleIndexMeta:
    """index.json. Validated on reading (from_json)."""
    epochs: int                        # E: training epoch e uses index epoch e mod E
    shards_sha256: str                 # shard_set_sha256 of the shard set it was drawn for
    samples: tuple[int, ...]           # kept samples, per epoch
    rejected_samples: tuple[int, ...]  # samples of images the shards job rejected, dropped, per epoch
    shards: str | None = None          # the shard set's path as the job was given it
    seeds: tuple[int, ...] | None = None  # each epoch's draw seed
    version: int = SAMPLE_INDEX_VERSION

    def bound_to(self, shards_json: bytes | str) -> bool:
        return self.shards_sha256 == shard_set_sha256(shards_json)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d, **{k: list(d[k]) for k in ("samples", "rejected_samples", "seeds") if d[k] is not None}}

    def to_json(self) -> str:
        return dump(self.to_dict())

    @classmethod
    def from_json(cls, text: str, where: str) -> SampleIndexMeta:
        """Parse and check: required keys, one count (and seed) per epoch; a MetadataError naming `where`."""
        raw = parse_versioned(text, where, "sample index", SAMPLE_INDEX_VERSION)
        try:
            seeds = raw.get("seeds")
            meta = cls(int(raw["epochs"]), str(raw["shards_sha256"]), tuple(int(n) for n in raw["samples"]),
                       tuple(int(n) for n in raw["rejected_samples"]),
                       None if raw.get("shards") is None else str(raw["shards"]),
                       None if seeds is None else tuple(int(s) for s in seeds))
        except (ValueError, KeyError, TypeError) as e:
            raise MetadataError(f"{where} is unreadable or lacks epochs/shards_sha256/samples/rejected_samples: "
                                f"{e!r}") from e
        meta.check(where)
        return meta

    def check(self, where: str) -> None:
        if self.epochs < 1:
            raise MetadataError(f"{where}: epochs is {self.epochs}, expected >= 1")
        for key in ("samples", "rejected_samples", "seeds"):
            per_epoch = getattr(self, key)
            if per_epoch is not None and len(per_epoch) != self.epochs:
                raise MetadataError(f"{where}: {key} lists {len(per_epoch)} epochs, epochs is {self.epochs}")


def index_file(out) -> Path:
    """OUT/index/index.json of a local sample index directory (jobs/resample.py's OUT)."""
    return Path(out) / INDEX_DIR / INDEX_FILE


def read_sample_index_meta(out) -> SampleIndexMeta:
    path = index_file(out)
    return SampleIndexMeta.from_json(read_text(path), str(path))
