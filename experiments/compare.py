r"""`make compare`: the papers' head-to-head on one's own data. Every arm of an architecture gets
the same measured training compute; each pretraining seed's export is evaluated with the linear
probe and few-shot k = 5 on the held-out task; the report gives bootstrap CIs over seeds and val
images and says which differences are real (transfer/bootstrap.py).

    python -m experiments.compare plan shards=S sample_index=I vocab=V budget_cpu_s=180 out=DIR [nproc=1]
    python -m experiments.compare run out=DIR data=build/demo/downstream seeds=[0,1,2] [img_size=64]
    python -m experiments.compare report out=DIR json=build/demo/compare.json
    python -m experiments.compare plan|run|report --help   # every key of that step

plan: one step of each stage's trainer is timed (experiments/step_cost.py: CPU seconds of the
training process, data loading excluded), and each stage gets share x budget CPU seconds of
steps, in whole batches (experiments/arms.py). run: `torchrun -m <trainer>` per stage and seed (a
finished run, with its result.json, is kept: rerunning resumes), then the protocols per run; the
CPU seconds each training process tree used are recorded beside the budget. report:
compare.json, compare.md, compare.png.
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

from experiments.arms import Arm, demo_arms, pairs, samples_for
from experiments.report import compare_table, pairwise_report, plot_compare
from pipeline.atomic import write_text_atomic
from trainer.config import key, load_config
from transfer.bootstrap import arm_summary, paired_difference

METRICS = ("linear_top1", "few_shot_5_top1")
PLAN_KEYS = ("budget_cpu_s", "shards", "sample_index", "vocab", "nproc")
# the hashtag trainer's key for a sample index bound to the shards (trainer/config.py ShardTrainConfig)
TRAINER_SAMPLE_INDEX_KEY = "sample_index"
PAPERS = {"regnety": ("hashtag", "swav", "weak supervision > self-supervision at equal compute (SWAG vs SEER)"),
          "vit": ("vit_mae_hashtag", "vit_hashtag", "MAE pre-pretraining improves hashtag pretraining (MAWS)")}


@dataclass(frozen=True)
class PlanConfig:
    shards: str = key(help="finished shard directory (jobs/shards.py), read by every trainer")
    sample_index: str = key(help="sample index bound to the shards (jobs/resample.py), for hashtag pretraining")
    vocab: str = key(help="vocabulary directory (jobs/vocab.py), for hashtag pretraining")
    budget_cpu_s: float = key(help="training CPU seconds of each arm")
    out: str = key(help="compare directory: plan.json, runs/, compare.md, compare.png")
    mae_share: float = key(0.5, "the MAWS arm's share of its budget for MAE")
    nproc: int = key(1, "torchrun --nproc_per_node of each training run")

    def __post_init__(self):
        if self.budget_cpu_s <= 0 or self.nproc < 1:
            raise ValueError(f"need budget_cpu_s > 0 and nproc >= 1, got {self.budget_cpu_s}, {self.nproc}")


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


def plan_main(a: PlanConfig) -> dict:
    from experiments.step_cost import step_cost

    arms = demo_arms(a.mae_share)
    path = Path(a.out) / "plan.json"
    if path.exists():  # a plan of the same inputs is kept: its runs resume, their lengths unchanged
        old = _read(path)
        same = {k: old.get(k) for k in PLAN_KEYS} == {k: getattr(a, k) for k in PLAN_KEYS} \
            and old.get("mae_share") == a.mae_share
        if same:
            print(f"compare plan: keeping {path} (same budget, data and processes)", file=sys.stderr)
            return old
    stage_args = {"trainer.pretrain": [f"{TRAINER_SAMPLE_INDEX_KEY}={a.sample_index}", f"vocab={a.vocab}"]}
    costs: dict[str, dict] = {}
    plan = {**{k: getattr(a, k) for k in PLAN_KEYS}, "mae_share": a.mae_share, "arms": {}}
    for name, arm in arms.items():
        stages = []
        for st in arm.stages:
            key = f"{st.trainer}:{st.config}"
            if key not in costs:
                costs[key] = step_cost(st.trainer, ["--config", st.config, f"shards={a.shards}",
                                                    *stage_args.get(st.trainer, [])])
                print(f"step cost {key}: {costs[key]['step_cpu_s']:.3f} CPU-s ({costs[key]['step_wall_s']:.3f} s "
                      f"wall) per batch of {costs[key]['batch_size']}", file=sys.stderr)
            c = costs[key]
            stages.append({"trainer": st.trainer, "config": st.config, "share": st.share,
                           "init_from_previous": st.init_from_previous, "step_cost_s": c["step_cpu_s"],
                           "batch_size": c["batch_size"],
                           "train_samples": samples_for(a.budget_cpu_s, st.share, c["step_cpu_s"], c["batch_size"]),
                           "extra": stage_args.get(st.trainer, [])})
        plan["arms"][name] = {"family": arm.family, "random": arm.random, "stages": stages}
    plan["step_costs"] = costs
    write_text_atomic(path, json.dumps(plan, indent=2))
    for name, arm in plan["arms"].items():
        print(f"{name}: " + (" then ".join(f"{s['trainer']} {s['train_samples']} samples" for s in arm["stages"])
                             or "random init"))
    return plan


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def train_stage(plan: dict, stage: dict, run_dir: Path, seed: int, init_from: Path | None) -> float:
    """Runs (or resumes) one stage; returns the CPU seconds its process tree used (0 if done)."""
    if (run_dir / "config.yaml").exists():
        import yaml

        planned = yaml.safe_load((run_dir / "config.yaml").read_text()).get("total_samples")
        if planned != stage["train_samples"]:
            raise SystemExit(f"compare: {run_dir} was trained for {planned} samples, the plan now gives "
                             f"{stage['train_samples']}: remove it (or the whole compare directory) and rerun")
    if (run_dir / "result.json").exists():
        return 0.0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={plan['nproc']}",
           "-m", stage["trainer"], "--config", stage["config"], f"shards={plan['shards']}", f"run_dir={run_dir}",
           f"total_samples={stage['train_samples']}", f"seed={seed}", *stage["extra"]]
    if init_from is not None:
        cmd.append(f"init_from={init_from}")
    before = _children_cpu()
    r = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if r.returncode != 0:
        raise SystemExit(f"compare: {' '.join(cmd)} failed with exit status {r.returncode}")
    return _children_cpu() - before


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
    for seed in a.seeds:
        for name, arm in plan["arms"].items():
            base = out / "runs" / f"{name}-seed{seed}"
            cpu, prev = 0.0, None
            for i, stage in enumerate(arm["stages"]):
                run_dir = base / f"stage{i}-{stage['trainer'].split('.')[-1]}"
                cpu += train_stage(plan, stage, run_dir, seed, prev / "export" if stage["init_from_previous"] else None)
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
               "train_samples": sum(s["train_samples"] for s in arm["stages"]),
               "step_cost_s": arm["stages"][-1]["step_cost_s"] if arm["stages"] else 0.0,
               "stages": [{k: s[k] for k in ("trainer", "config", "share", "train_samples", "step_cost_s")}
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
    arm_objs = {n: Arm(r["family"], r["random"]) for n, r in arms_plan.items()}
    pair_stats = {(x, y): {m: paired_difference(matrices[(x, m)], matrices[(y, m)], seed=a.boot_seed)
                           for m in METRICS} for x, y in pairs(arm_objs)}
    lines = [f"# Arms at equal compute ({plan['budget_cpu_s']:g} CPU-s of measured training steps each), "
             f"{n_val} val images", "", compare_table(per_arm, METRICS), ""]
    for m in METRICS:
        lines += [f"## Differences, {m}", ""] + [f"- {x}" for x in pairwise_report(pair_stats, m)] + [""]
    verdicts = {}
    for fam, (x, y, claim) in PAPERS.items():
        if (x, y) not in pair_stats:
            continue
        d = pair_stats[(x, y)]["linear_top1"]
        verdict = ("holds" if d["significant"] and d["diff"] > 0 else "is reversed" if d["significant"]
                   else "points the papers' way but is not significant" if d["diff"] > 0
                   else "is not seen (not significant)")
        verdicts[fam] = {"claim": claim, "pair": [x, y], "verdict": verdict, "diff": d["diff"], "ci95": d["ci95"]}
        lines.append(f"**{claim}**: on this task, linear probe {x} - {y} = {100 * d['diff']:+.1f} points "
                     f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]: the ordering {verdict}.")
    rec = {"arms": per_arm, "budget_cpu_s": plan["budget_cpu_s"], "val_images": n_val,
           "pairs": {f"{x} - {y}": v for (x, y), v in pair_stats.items()}, "papers": verdicts,
           "step_costs": plan["step_costs"]}
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
