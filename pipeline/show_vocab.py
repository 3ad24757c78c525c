"""Print a vocabulary built by jobs/vocab.py: size, top labels with their merged hashtags, stats."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq


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
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("vocab_dir", type=Path)
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args(argv)
    print(summary(a.vocab_dir, a.top))


if __name__ == "__main__":
    main()
