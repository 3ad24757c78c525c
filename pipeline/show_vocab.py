"""Print a vocabulary built by jobs/vocab.py: size, top labels with their merged hashtags, stats.

    python -m pipeline.show_vocab vocab=build/demo/vocab [top=15]
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.cli import key, load_config


@dataclass(frozen=True)
class ShowVocabConfig:
    vocab: str = key(help="output directory of jobs/vocab.py")
    top: int = key(15, "labels listed")


def summary(vocab_dir: Path, top: int = 15) -> str:
    rows = pq.read_table(vocab_dir / "vocab.parquet").to_pylist()
    stats = json.loads((vocab_dir / "stats.json").read_text())
    lines = [f"Canonical hashtag vocabulary: {len(rows)} labels from {stats['distinct_hashtags']} distinct "
             f"hashtags on {stats['rows_kept']} images ({stats['rows_read']} rows read)",
             f"  rows dropped: {stats['rows_dropped']}",
             f"  hashtags dropped: {stats['hashtags_dropped']}; get_synsets calls: {stats['get_synsets_calls']}",
             f"  top {min(top, len(rows))} labels (label, images, name <- merged hashtags; synsets):"]
    for r in rows[:top]:
        merged = ", ".join(h for h in r["hashtags"] if h != r["name"])
        lines.append(f"  {r['label']:>4} {r['images']:>6}  {r['name']}" + (f" <- {merged}" if merged else "")
                     + f"; {r['key']}")
    merged_labels = [r for r in rows if len(r["hashtags"]) > 1]
    lines.append(f"  {len(merged_labels)} labels merge several raw hashtags, e.g.: " + "; ".join(
        "+".join(r["hashtags"]) for r in merged_labels[:8]))
    lines.append(f"  outputs: {vocab_dir}/vocab.parquet, hashtag_map.parquet, image_hashtags.parquet, stats.json")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(ShowVocabConfig, argv, "pipeline.show_vocab", __doc__)
    print(summary(Path(cfg.vocab), cfg.top))


if __name__ == "__main__":
    main()
