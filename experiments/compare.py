r"""`make compare`: the papers' head-to-head on one's own data. Every arm of an architecture gets
the same measured training compute; each pretraining seed's export is evaluated with the linear
probe and few-shot k = 5 on the held-out task; the report gives bootstrap CIs over seeds and val
images and says which differences are real (transfer/bootstrap.py).

    python -m experiments.compare plan shards=S sample_index=I vocab=V budget_cpu_s=180 out=DIR [nproc=1]
    python -m experiments.compare plan arms=sampling corpora=CORPORA.yaml budget_cpu_s=180 out=DIR
    python -m experiments.compare run out=DIR data=build/demo/downstream seeds=[0,1,2] [img_size=64]
    python -m experiments.compare report out=DIR json=build/demo/compare.json
    python -m experiments.compare plan|run|report --help   # every key of that step

plan (experiments/plan.py): the arm set (experiments/arms.py: papers, sampling), the corpus and
sample index each arm trains on, and each stage's samples: share x budget CPU seconds of its
measured step (experiments/step_cost.py: CPU seconds of the training process, data loading
excluded), in whole batches. run: `torchrun -m <trainer>` per stage and seed (a finished run,
with its result.json, is kept: rerunning resumes; a run directory trained on other data than the
plan's is refused), then the protocols per run; the CPU seconds each training process tree used
are recorded beside the budget. report: compare.json, compare.md, compare.png.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.arms import Arm, claims, pairs
from experiments.plan import TRAINER_SAMPLE_INDEX_KEY, PlanConfig, plan_main
from experiments.report import claim_verdict, compare_table, pairwise_report, plot_compare
from pipeline.atomic import write_text_atomic
from trainer.config import key, load_config
from transfer.bootstrap import arm_summary, paired_difference

METRICS = ("linear_top1", "few_shot_5_top1")


@dataclass(frozen=True)
class RunConfig:
    out: str = key(help="compare directory holding plan.json (the plan step's out)")
    data: str = key(help="downstream task (transfer/heldout_task.py)")
    seeds: tuple[int, ...] = key((0, 1, 2), "pretraining seeds of every arm")
    img_size: int = key(64, "input side of the linear probe and few-shot")
    few_shot_seeds: int = key(3, "few-shot draws per run")

    def __post_init__(self):
        if not self.seeds or self.few_shot_seeds < 1:
            raise ValueError(f"need at least one seed and few_shot_seeds >= 1, got {self.seeds}, {self.few_shot_seeds}")


@dataclass(frozen=True)
class ReportConfig:
    out: str = key(help="compare directory with evaluated runs (the run step's out)")
    json: str = key(help="where compare.json goes")
    boot_seed: int = key(0, "seed of the bootstrap resampling")


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def train_stage(plan: dict, arm: dict, stage: dict, run_dir: Path, seed: int, init_from: Path | None) -> float:
    """Runs (or resumes) one stage; returns the CPU seconds its process tree used (0 if done)."""
    if (run_dir / "config.yaml").exists():  # the trainer's resolved config: what it trains on, and how long
        import yaml

        had = yaml.safe_load((run_dir / "config.yaml").read_text())
        planned = {"total_samples": stage["train_samples"], "shards": arm["shards"], TRAINER_SAMPLE_INDEX_KEY: None,
                   **dict(e.split("=", 1) for e in stage["extra"])}
        wrong = [f"{k}={had.get(k)} (the plan now gives {v})" for k, v in planned.items() if had.get(k) != v]
        if wrong:
            raise SystemExit(f"compare: {run_dir} was trained with {', '.join(wrong)}: remove it (or the whole "
                             f"compare directory) and rerun")
    if (run_dir / "result.json").exists():
        return 0.0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={plan['nproc']}",
           "-m", stage["trainer"], "--config", stage["config"], f"shards={arm['shards']}", f"run_dir={run_dir}",
           f"total_samples={stage['train_samples']}", f"seed={seed}", *stage["extra"]]
    if init_from is not None:
        cmd.append(f"init_from={init_from}")
    before = _children_cpu()
    r = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if r.returncode != 0:
        raise SystemExit(f"compare: {' '.join(cmd)} failed with exit status {r.returncode}")
    return _children_cpu() - before


RUN_DATA = ("corpus", "shards", "shards_sha256")
RUN_STAGE_DATA = ("trainer", "config", "init_from_previous", "index", "sample_index", "index_sha256", "train_samples")


def run_data(arm: dict) -> dict:
    """What an arm's run directory trains on and for how long (its data.json): the corpus, the
    sha256s of its shards and indices, each stage's samples. Data rebuilt in place has new sha256s."""
    return {**{k: arm[k] for k in RUN_DATA},
            "stages": [{k: s[k] for k in RUN_STAGE_DATA} for s in arm["stages"]]}


def check_run_data(base: Path, arm: dict) -> None:
    """Refuses to resume or keep a run directory trained on other data than the plan's arm."""
    path = base / "data.json"
    if not path.exists():
        return
    flat = [{**{k: v for k, v in r.items() if k != "stages"},
             **{f"stage{i}.{k}": v for i, s in enumerate(r["stages"]) for k, v in s.items()}}
            for r in (_read(path), run_data(arm))]
    wrong = [f"{k} {flat[0].get(k)} (the plan now gives {flat[1].get(k)})" for k in sorted(set(flat[0]) | set(flat[1]))
             if flat[0].get(k) != flat[1].get(k)]
    if wrong:
        raise SystemExit(f"compare: {base} was trained on other data: {'; '.join(wrong)}. Remove it (or the whole "
                         f"compare directory) and rerun")


def evaluate(model: str, data: str, out_dir: Path, seed: int, img_size: int, few_shot_seeds: int) -> dict:
    """Linear probe and few-shot k = 5 of `model` (kept where already written)."""
    from transfer.few_shot import FewShotConfig
    from transfer.few_shot import run as few_shot
    from transfer.linear_probe import LinearProbeConfig
    from transfer.linear_probe import run as linear_probe

    cache = str(out_dir.parent / "features")
    lin, few = out_dir / "linear.json", out_dir / "few_shot.json"
    if not lin.exists():
        linear_probe(LinearProbeConfig(model=model, data=data, out=str(lin), img_size=img_size, seed=seed,
                                       cache_dir=cache))
    if not few.exists():
        few_shot(FewShotConfig(model=model, data=data, out=str(few), img_size=img_size, seed=seed, ks=(5,),
                               seeds=few_shot_seeds, cache_dir=cache))
    return {"linear": _read(lin), "few_shot": _read(few)}


def run_main(a: RunConfig) -> None:
    out = Path(a.out)
    plan = _read(out / "plan.json")
    trained = {name: arm for name, arm in plan["arms"].items() if arm["stages"]}
    for seed in a.seeds:  # every run directory checked before any training
        for name, arm in trained.items():
            check_run_data(out / "runs" / f"{name}-seed{seed}", arm)
    for seed in a.seeds:
        for name, arm in plan["arms"].items():
            base = out / "runs" / f"{name}-seed{seed}"
            if arm["stages"] and not (base / "data.json").exists():
                write_text_atomic(base / "data.json", json.dumps(run_data(arm), indent=2))
            cpu, prev = 0.0, None
            for i, stage in enumerate(arm["stages"]):
                run_dir = base / f"stage{i}-{stage['trainer'].split('.')[-1]}"
                cpu += train_stage(plan, arm, stage, run_dir, seed,
                                   prev / "export" if stage["init_from_previous"] else None)
                prev = run_dir
            if arm["stages"]:
                spent = base / "train_cpu_s.json"
                if cpu > 0 or not spent.exists():
                    write_text_atomic(spent, json.dumps({"train_cpu_s": cpu}))
            model = str(prev / "export") if prev else f"random:{arm['random']}"
            evaluate(model, a.data, base / "eval", seed, a.img_size, a.few_shot_seeds)


def _correct(runs: list[dict], metric: str) -> np.ndarray:
    if metric == "linear_top1":
        return np.array([r["linear"]["val_correct"] for r in runs], dtype=np.float64)
    return np.array([r["few_shot"]["k"]["5"]["val_correct"] for r in runs], dtype=np.float64)


def corpus_lines(plan: dict) -> list[str]:
    """The corpora the arms trained on; arms of different corpora are not paired."""
    lines = [f"- corpus {n}: shards {c['shards']}, vocab {c['vocab']}; indices "
             + ", ".join(f"{i} {d}" for i, d in c["indices"].items()) for n, c in plan["corpora"].items()]
    if len({arm["corpus"] for arm in plan["arms"].values() if arm["stages"]}) > 1:
        lines.append("- arms of different corpora are not paired: their label spaces and labelled images differ "
                     "(their rows are on the same held-out task)")
    return lines


def report_main(a: ReportConfig) -> dict:
    out = Path(a.out)
    plan = _read(out / "plan.json")
    arms_plan = plan["arms"]
    per_arm, matrices = {}, {}
    for name, arm in arms_plan.items():
        dirs = sorted((out / "runs").glob(f"{name}-seed*"), key=lambda p: int(p.name.rsplit("seed", 1)[1]))
        runs = [{"linear": _read(d / "eval" / "linear.json"), "few_shot": _read(d / "eval" / "few_shot.json")}
                for d in dirs if (d / "eval" / "few_shot.json").exists()]
        if not runs:
            raise SystemExit(f"compare report: no evaluated run of arm {name} under {out / 'runs'}")
        rec = {"seeds": [int(d.name.rsplit("seed", 1)[1]) for d in dirs if (d / "eval" / "few_shot.json").exists()],
               "corpus": arm["corpus"] if arm["stages"] else None,
               "train_samples": sum(s["train_samples"] for s in arm["stages"]),
               "step_cost_s": arm["stages"][-1]["step_cost_s"] if arm["stages"] else 0.0,
               "stages": [{k: s[k] for k in ("trainer", "config", "share", "index", "train_samples", "step_cost_s")}
                          for s in arm["stages"]]}
        spent = [_read(d / "train_cpu_s.json")["train_cpu_s"] for d in dirs if (d / "train_cpu_s.json").exists()]
        if spent:
            rec["train_cpu_s"] = {"mean": float(np.mean(spent)), "runs": spent}
        for m in METRICS:
            matrices[(name, m)] = _correct(runs, m)
            rec[m] = arm_summary(matrices[(name, m)], seed=a.boot_seed)
        per_arm[name] = rec
    val = {matrices[k].shape[1] for k in matrices}
    if len(val) != 1:
        raise SystemExit(f"compare report: the arms were evaluated on different val sets ({sorted(val)} images)")
    n_val = val.pop()
    arm_objs = {n: Arm(r["family"], r["random"], corpus=r["corpus"]) for n, r in arms_plan.items()}
    pair_stats = {(x, y): {m: paired_difference(matrices[(x, m)], matrices[(y, m)], seed=a.boot_seed)
                           for m in METRICS} for x, y in pairs(arm_objs)}
    lines = [f"# Arms at equal compute ({plan['budget_cpu_s']:g} CPU-s of measured training steps each), "
             f"{n_val} val images", "", *corpus_lines(plan), "", compare_table(per_arm, METRICS), ""]
    for m in METRICS:
        lines += [f"## Differences, {m}", ""] + [f"- {x}" for x in pairwise_report(pair_stats, m)] + [""]
    verdicts = {}
    for name, claim in claims(plan["arm_set"]).items():
        if (claim.a, claim.b) not in pair_stats:
            continue
        d = pair_stats[(claim.a, claim.b)]["linear_top1"]
        verdict, line = claim_verdict(claim, d)
        verdicts[name] = {"claim": claim.text, "pair": [claim.a, claim.b], "verdict": verdict, "diff": d["diff"],
                          "ci95": d["ci95"], "significant": d["significant"], "images_needed": d["images_needed"]}
        lines.append(line)
    rec = {"arm_set": plan["arm_set"], "arms": per_arm, "budget_cpu_s": plan["budget_cpu_s"], "val_images": n_val,
           "corpora": plan["corpora"], "pairs": {f"{x} - {y}": v for (x, y), v in pair_stats.items()},
           "claims": verdicts, "step_costs": plan["step_costs"]}
    md = "\n".join(lines) + "\n"
    write_text_atomic(out / "compare.md", md)
    plot_compare(per_arm, out / "compare.png", METRICS, f"equal compute: {plan['budget_cpu_s']:g} CPU-s per arm")
    write_text_atomic(a.json, json.dumps(rec, indent=2))
    print(md + f"written: {a.json}, {out / 'compare.md'}, {out / 'compare.png'}")
    return rec


COMMANDS = {"plan": (PlanConfig, plan_main, "time each stage's step; write plan.json with every stage's samples"),
            "run": (RunConfig, run_main, "train every arm x seed, then the linear probe and few-shot of each"),
            "report": (ReportConfig, report_main, "compare.json, compare.md, compare.png")}
USAGE = "usage: python -m experiments.compare {plan|run|report} [--config FILE.yaml] [key=value ...]"


def main(argv: list[str] | None = None):
    """`plan`, `run` or `report` first, then that step's keys (trainer/config.py's loader)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        cls, fn, what = COMMANDS[argv[0]]
        return fn(load_config(cls, argv[1:], f"experiments.compare {argv[0]}", f"{argv[0]}: {what}"))
    if argv[:1] in (["-h"], ["--help"]):
        steps = "\n".join(f"  {name:<7} {what}" for name, (_, _, what) in COMMANDS.items())
        print(f"{USAGE}\n\n{__doc__.strip()}\n\nsteps:\n{steps}")
        raise SystemExit(0)
    got = f"unknown step {argv[0]!r}" if argv else "no step given"
    print(f"{USAGE}\nexperiments.compare: error: {got}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
