"""Print what a training run did: loss at the start and end, throughput, where the outputs are.

    python -m trainer.show_run run_dir=build/demo/pretrain
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.config import key, load_config


@dataclass(frozen=True)
class ShowRunConfig:
    run_dir: str = key(help="run directory of a trainer (metrics.jsonl, curves.png, export/)")


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
    print(summary(Path(load_config(ShowRunConfig, argv, "trainer.show_run", __doc__).run_dir)))


if __name__ == "__main__":
    main()
