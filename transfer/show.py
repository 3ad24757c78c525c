"""Collect the transfer protocols' results into one transfer.json, and print it as a table.

    python -m transfer.show --collect build/demo/transfer --out build/demo/transfer.json
    python -m transfer.show build/demo/transfer.json

--collect reads, from one directory, linear_{random_init,pretrained}.json,
few_shot_{random_init,pretrained}.json, zero_shot.json and finetune_{random_init,pretrained}.json
(the finetune ones optional) and writes
{"linear": {"random_init": top1, "pretrained": top1}, "few_shot": {"<k>": {...: mean top1}},
 "zero_shot": top1, "finetune": {"random_init": top1, "pretrained": top1, "steps": N, "img_size": S}}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.atomic import write_text_atomic

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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("transfer_json", nargs="?", type=Path)
    p.add_argument("--collect", type=Path, help="directory of per-protocol results")
    p.add_argument("--out", type=Path, help="with --collect: where to write transfer.json")
    a = p.parse_args(argv)
    if a.collect:
        t = collect(a.collect)
        if a.out:
            write_text_atomic(a.out, json.dumps(t, indent=2))
    elif a.transfer_json:
        t = json.loads(a.transfer_json.read_text())
    else:
        p.error("give a transfer.json, or --collect DIR")
    print(table(t))
    return t


if __name__ == "__main__":
    main()
