"""Print what a training run did: loss at the start and end, throughput, where the outputs are."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def summary(run_dir: Path) -> str:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    if not rows:
        return f"{run_dir}: no metrics yet"
    k = max(1, len(rows) // 10)
    first = sum(r["loss"] for r in rows[:k]) / k
    last = sum(r["loss"] for r in rows[-k:]) / k
    rates = [r["img_per_s"] for r in rows if "img_per_s" in r]
    lines = [f"run {run_dir}: {rows[-1]['step']} steps, {rows[-1]['samples']} samples",
             f"  loss {first:.3f} (first {k} logs) -> {last:.3f} (last {k} logs)"
             + ("  falling" if last < first else "  NOT falling"),
             f"  throughput ~{rates[-1]:.0f} img/s" if rates else ""]
    for name in ("curves.png", "export/model.safetensors", "metrics.jsonl", "tb"):
        if (run_dir / name).exists():
            lines.append(f"  {run_dir / name}")
    return "\n".join(x for x in lines if x)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir", type=Path)
    print(summary(p.parse_args(argv).run_dir))


if __name__ == "__main__":
    main()
