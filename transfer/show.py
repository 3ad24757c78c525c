"""Collect the transfer protocols' results into one transfer.json, and print it as a table.

    python -m transfer.show collect=build/demo/transfer out=build/demo/transfer.json
    python -m transfer.show table=build/demo/transfer.json

collect= reads, from one directory, linear_{random_init,pretrained}.json,
few_shot_{random_init,pretrained}.json, zero_shot.json and finetune_{random_init,pretrained}.json
(the finetune ones optional) and writes
{"linear": {"random_init": top1, "pretrained": top1}, "few_shot": {"<k>": {...: mean top1}},
 "zero_shot": top1, "finetune": {"random_init": top1, "pretrained": top1, "steps": N, "img_size": S}}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import write_text_atomic
from pipeline.cli import ConfigError, key, load_config

ARMS = ("random_init", "pretrained")


def _read(directory: Path, name: str, required: bool = True) -> dict | None:
    p = directory / f"{name}.json"
    if not p.is_file():
        if required:
            raise ValueError(f"{directory}: missing {p.name} (run the transfer protocols first)")
        return None
    return json.loads(p.read_text())


def collect(directory: str | Path) -> dict:
    d = Path(directory)
    lin = {a: _read(d, f"linear_{a}") for a in ARMS}
    few = {a: _read(d, f"few_shot_{a}") for a in ARMS}
    archs = {a: lin[a]["arch"] for a in ARMS}
    if len(set(archs.values())) != 1:
        raise ValueError(f"random_init and pretrained trunks differ in architecture: {archs}")
    if few["random_init"]["k"].keys() != few["pretrained"]["k"].keys():
        raise ValueError("few-shot results of the two trunks cover different k")
    out = {"linear": {a: lin[a]["top1"] for a in ARMS},
           "few_shot": {k: {a: few[a]["k"][k]["mean_top1"] for a in ARMS} for k in few["pretrained"]["k"]},
           "zero_shot": _read(d, "zero_shot")["top1"], "finetune": {}}
    for a in ARMS:
        ft = _read(d, f"finetune_{a}", required=False)
        if ft is not None:
            out["finetune"].update({a: ft["top1"], "steps": ft["steps"], "img_size": ft["img_size"]})
    return out


def table(t: dict) -> str:
    def row(name, r, p):
        gain = f"{100 * (p - r):+.1f}" if r is not None and p is not None else ""
        f = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        return f"| {name} | {f(r)} | {f(p)} | {gain} |"

    lines = ["| protocol (top-1 on the held-out categories) | random init | hashtag-pretrained | gain (points) |",
             "| --- | --- | --- | --- |", row("linear probe", t["linear"]["random_init"], t["linear"]["pretrained"])]
    for k, v in t["few_shot"].items():
        lines.append(row(f"few-shot, k={k} (mean over seeds)", v["random_init"], v["pretrained"]))
    ft = t.get("finetune") or {}
    if ft:
        lines.append(row(f"finetune, {ft.get('steps')} steps at {ft.get('img_size')} px (EMA)",
                         ft.get("random_init"), ft.get("pretrained")))
    lines.append(row("zero-shot (WordNet mapping, no training)", None, t["zero_shot"]))
    return "\n".join(lines)


@dataclass(frozen=True)
class ShowConfig:
    table: str | None = key(None, "a transfer.json to print")
    collect: str | None = key(None, "directory of per-protocol results to collect (and print)")
    out: str | None = key(None, "with collect: where to write transfer.json")

    def __post_init__(self):
        if (self.table is None) == (self.collect is None):
            raise ConfigError("give table=transfer.json, or collect=DIR")
        if self.out is not None and self.collect is None:
            raise ConfigError("out= goes with collect=")


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(ShowConfig, argv, "transfer.show", __doc__)
    if cfg.collect:
        t = collect(Path(cfg.collect))
        if cfg.out:
            write_text_atomic(Path(cfg.out), json.dumps(t, indent=2))
    else:
        t = json.loads(Path(cfg.table).read_text())
    print(table(t))
    return t


if __name__ == "__main__":
    main()
