"""Ingest Debian's openclipart corpus as a hashtag manifest plus a held-out evaluation split.

    python -m jobs.ingest_openclipart --root /usr/share/openclipart --out build/demo \
        [--holdout 0.2] [--seed 0]

Plain Python, no Spark: about 8k local files. Writes OUT/manifest.parquet (pretraining images),
OUT/heldout.parquet (held-out images outside the `unsorted` category), both with schema
schemas.OPENCLIPART_MANIFEST and sorted by image_id, then OUT/ingest_stats.json last. Each file
is written under a temporary name in OUT and renamed into place. Each row's `hashtags` are its
SVG's dc:subject keywords and its `text` the SVG's dc:title and dc:description
(pipeline.openclipart.svg_text; "" when it has neither): the image-text pairs of LiT. The text
never feeds the hashtag vocabulary, and a held-out image's text stays in heldout.parquet.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.lib.config import parse_config  # noqa: E402
from pipeline.atomic import atomic_path, write_text_atomic  # noqa: E402
from pipeline.openclipart import scan_corpus, split_rows  # noqa: E402
from schemas import OPENCLIPART_MANIFEST  # noqa: E402


@dataclass(frozen=True)
class IngestConfig:
    root: str = field(metadata={"help": "corpus root holding png/ and svg/"})
    out: str = field(metadata={"help": "output directory"})
    holdout: float = field(default=0.2, metadata={"help": "share of images held out, in [0, 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the held-out split"})

    def __post_init__(self):
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"--holdout must be in [0, 1), got {self.holdout}")
        for sub in ("png", "svg"):
            d = Path(self.root) / sub
            if not d.is_dir():
                raise ValueError(f"--root {self.root}: no {sub}/ directory ({d})")


def _write_table(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=OPENCLIPART_MANIFEST)  # drops canonical_id
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def run(cfg: IngestConfig) -> dict:
    corpus = scan_corpus(cfg.root)
    split = split_rows(corpus.rows, cfg.holdout, cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_table(out / "manifest.parquet", split.pretrain)
    _write_table(out / "heldout.parquet", split.heldout)
    stats = {
        "png_files": corpus.png_files,
        "png_symlinks": corpus.png_symlinks,
        "non_png_files_ignored": corpus.ignored_files,
        "rows": {"manifest.parquet": len(split.pretrain), "heldout.parquet": len(split.heldout)},
        "skipped": corpus.skipped,
        "heldout_images": len(split.heldout) + split.excluded_unsorted,
        "heldout_unsorted_excluded": split.excluded_unsorted,
        "images_without_keywords": sum(not r["hashtags"] for r in corpus.rows),
        "images_without_text": sum(not r["text"] for r in corpus.rows),
        "config": asdict(cfg),
    }
    write_text_atomic(out / "ingest_stats.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(IngestConfig, argv, __doc__.splitlines()[0])
    stats = run(cfg)
    rows = stats["rows"]
    print(f"openclipart: {rows['manifest.parquet']} pretraining + {rows['heldout.parquet']} held-out "
          f"images ({stats['heldout_unsorted_excluded']} held-out unsorted excluded, "
          f"{sum(stats['skipped'].values())} skipped {stats['skipped']}) "
          f"of {stats['png_files']} PNGs -> {cfg.out}")
    return stats


if __name__ == "__main__":
    main()
