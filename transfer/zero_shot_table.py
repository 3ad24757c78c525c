r"""Both zero-shot routes side by side on one labelled task (`make demo-lit`): LiT by class name,
SWAG's WordNet mapping with each aggregation, and the majority rate, each with a 95% bootstrap
CI over the val images (transfer/bootstrap.py), and LiT's paired difference from each.

    python -m transfer.zero_shot_table data=build/demo/downstream lit=build/demo/lit/lit.json \
        wordnet_average=build/demo/lit/wordnet_average.json \
        wordnet_split_max=build/demo/lit/wordnet_split_max.json out=build/demo/lit/zero_shot.json

The results are transfer.zero_shot's JSON files (their per-image val_correct and
val_top5_correct, on the same val images). The majority rate predicts the task's most frequent
train class for every val image (top-5: its five most frequent). Writes OUT and OUT with .md.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cli import key, load_config
from transfer.bootstrap import arm_summary, paired_difference
from transfer.downstream import load_split
from transfer.protocol import check_out, write_result


@dataclass(frozen=True)
class ZeroShotTableConfig:
    data: str = key(help="the downstream task the results were computed on")
    lit: str = key(help="transfer.zero_shot method=lit result JSON")
    out: str = key(help="table JSON; the Markdown goes next to it")
    wordnet_average: str | None = key(None, "transfer.zero_shot method=wordnet aggregation=average result JSON")
    wordnet_split_max: str | None = key(None, "transfer.zero_shot method=wordnet aggregation=split_max result JSON")
    n_boot: int = key(2000, "bootstrap replicates")
    seed: int = key(0, "bootstrap seed")

    def __post_init__(self):
        check_out(self.out)


def majority(data: str) -> tuple[dict, str]:
    """Per val image: right or not when every image gets the most frequent train class (top-5: the five)."""
    train, val = load_split(data, "train"), load_split(data, "val")
    order = [c for c, _ in sorted(Counter(train.labels).items(), key=lambda kv: (-kv[1], kv[0]))]
    y = np.array(val.labels)
    return {"val_correct": (y == order[0]).astype(int).tolist(),
            "val_top5_correct": np.isin(y, order[:5]).astype(int).tolist()}, train.classes[order[0]]


def read_result(path: str, n: int) -> dict:
    r = json.loads(Path(path).read_text())
    if r.get("split", "val") != "val":
        raise ValueError(f"{path}: scored on the {r['split']} split (a dev set); the table compares val results")
    for k in ("val_correct", "val_top5_correct"):
        if len(r.get(k) or []) != n:
            raise ValueError(f"{path}: {k} holds {len(r.get(k) or [])} val images, the task has {n} (rerun "
                             "transfer.zero_shot on this data)")
    return r


def run(cfg: ZeroShotTableConfig) -> dict:
    base, majority_class = majority(cfg.data)
    n = len(base["val_correct"])
    rows = {"lit": read_result(cfg.lit, n)}
    for name in ("wordnet_average", "wordnet_split_max"):
        if getattr(cfg, name):
            rows[name] = read_result(getattr(cfg, name), n)
    rows["majority"] = base
    table = {}
    for name, r in rows.items():
        table[name] = {m: arm_summary([r[f"val_{k}"]], cfg.n_boot, cfg.seed)
                       for m, k in (("top1", "correct"), ("top5", "top5_correct"))}
        for s in table[name].values():
            s.pop("runs"), s.pop("se_runs")
    diffs = {f"lit - {name}": {m: paired_difference([rows["lit"][f"val_{k}"]], [rows[name][f"val_{k}"]], cfg.n_boot,
                                                    cfg.seed)
                               for m, k in (("top1", "correct"), ("top5", "top5_correct"))}
             for name in rows if name != "lit"}
    result = {"val_images": n, "classes": len(load_split(cfg.data, "train").classes), "majority_class": majority_class,
              "methods": table, "differences": diffs,
              "sources": {"lit": cfg.lit, "wordnet_average": cfg.wordnet_average,
                          "wordnet_split_max": cfg.wordnet_split_max}}
    md = markdown(result)
    write_result(cfg, result, md)
    print(md)
    return result


def _cell(s: dict) -> str:
    lo, hi = s["ci95"]
    return f"{100 * s['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown(result: dict) -> str:
    lines = [f"## Zero-shot on {result['val_images']} val images of {result['classes']} classes (95% bootstrap CI)",
             "", "| method | top-1 % | top-5 % |", "| --- | --- | --- |"]
    for name, m in result["methods"].items():
        label = f"majority ({result['majority_class']})" if name == "majority" else name
        lines.append(f"| {label} | {_cell(m['top1'])} | {_cell(m['top5'])} |")
    lines += ["", "| difference | top-1 points | top-5 points |", "| --- | --- | --- |"]
    for name, d in result["differences"].items():
        lines.append("| " + name + " | " + " | ".join(
            f"{100 * d[m]['diff']:+.1f} [{100 * d[m]['ci95'][0]:+.1f}, {100 * d[m]['ci95'][1]:+.1f}]"
            f"{' *' if d[m]['significant'] else ''}" for m in ("top1", "top5")) + " |")
    lines.append("\n\\* the CI excludes 0")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    return run(load_config(ZeroShotTableConfig, argv, "transfer.zero_shot_table", __doc__))


if __name__ == "__main__":
    main()
