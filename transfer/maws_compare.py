"""MAWS vs plain hashtag pretraining at equal compute: step costs, the plain arm's length, the report.

    python -m transfer.maws_compare cost --mae-config trainer/configs/mae_demo_cpu.yaml \
        --pretrain-config trainer/configs/demo_vit_cpu.yaml --shards build/demo/shards --out F.json
        # prints the plain arm's total_samples on stdout
    python -m transfer.maws_compare report --cost F.json --mae RUN --maws RUN --plain RUN \
        --probe-maws J.json --probe-plain J.json [--probe-random J.json] --out build/demo/maws.json

Equal compute is equal training CPU time on this machine: one training step of the MAE and of the
hashtag classifier (transfer/step_cost.py: each trainer's own task step on a real batch of the
shards, normalization included, no data loading) are timed `--steps` times each after warm-up;
the fastest is taken (as timeit does: slower repeats measure other processes' load, not the
step). `make compare` measures its arms the same way. With c = (MAE CPU time per image) / (hashtag CPU time per image),
the MAWS arm is M MAE images + H hashtag images and the plain arm gets H + c*M hashtag images
(rounded to whole batches). FLOPs of one step of each (torch's FlopCounterMode) are recorded too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pipeline.atomic import write_text_atomic
from trainer.config import load_config


def step_costs(mae_argv: list[str], pretrain_argv: list[str], steps: int = 5, warmup: int = 2) -> dict:
    """One step of the MAE and of the hashtag classifier, each configured by its command line and
    timed by transfer/step_cost.py (the trainers' own task steps on a real batch of the shards)."""
    from transfer.step_cost import step_cost

    rec = {}
    for name, trainer, argv in (("mae", "trainer.mae", mae_argv), ("hashtag", "trainer.pretrain", pretrain_argv)):
        c = step_cost(trainer, argv, steps, warmup)
        rec[name] = {"batch_size": c["batch_size"], "step_s": c["step_cpu_s"], "step_wall_s": c["step_wall_s"],
                     "step_times_s": c["cpu_times_s"], "s_per_image": c["cpu_s_per_image"],
                     "flops_per_step": c["flops_per_step"], "flops_per_image": c["flops_per_step"] / c["batch_size"]}
    rec["time_ratio"] = rec["mae"]["s_per_image"] / rec["hashtag"]["s_per_image"]
    rec["flop_ratio"] = rec["mae"]["flops_per_image"] / rec["hashtag"]["flops_per_image"]
    rec["threads"] = torch.get_num_threads()
    return rec


def plain_total_samples(mae_samples: int, hashtag_samples: int, ratio: float, batch: int) -> int:
    """H + ratio * M hashtag images, rounded to whole global batches."""
    return max(1, round((hashtag_samples + ratio * mae_samples) / batch)) * batch


def cost_main(a) -> None:
    from trainer.mae import MaeConfig
    from trainer.pretrain import PretrainConfig

    mae_argv = ["--config", a.mae_config, f"shards={a.shards}", *a.mae_overrides]
    pre_argv = ["--config", a.pretrain_config, f"shards={a.shards}", *a.pretrain_overrides]
    need = ["run_dir=x"]
    mae_cfg = load_config(MaeConfig, [*mae_argv, *need])
    pre_cfg = load_config(PretrainConfig, [*pre_argv, *need])
    rec = step_costs(mae_argv, pre_argv, a.steps)
    mae_n, pre_n = mae_cfg.steps * mae_cfg.batch_size, pre_cfg.steps * pre_cfg.batch_size
    rec.update({"mae_samples": mae_n, "maws_hashtag_samples": pre_n, "model": pre_cfg.model,
                "plain_total_samples": plain_total_samples(mae_n, pre_n, rec["time_ratio"], pre_cfg.batch_size),
                "plain_total_samples_by_flops": plain_total_samples(mae_n, pre_n, rec["flop_ratio"],
                                                                    pre_cfg.batch_size)})
    write_text_atomic(a.out, json.dumps(rec, indent=2))
    print(f"step cost per image: MAE {rec['mae']['s_per_image'] * 1e3:.2f} ms, hashtag "
          f"{rec['hashtag']['s_per_image'] * 1e3:.2f} ms CPU (time ratio {rec['time_ratio']:.3f}, FLOP ratio "
          f"{rec['flop_ratio']:.3f}); plain arm: {rec['plain_total_samples']} samples", file=sys.stderr)
    print(rec["plain_total_samples"])


def _last_loss(run: str) -> float:
    rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return rows[-1]["loss"]


def report_main(a) -> dict:
    cost = json.loads(Path(a.cost).read_text())
    probes = {k: json.loads(Path(p).read_text()) for k, p in
              (("maws", a.probe_maws), ("plain", a.probe_plain), ("random", a.probe_random)) if p}
    arms = {
        "maws": {"mae_samples": cost["mae_samples"], "hashtag_samples": cost["maws_hashtag_samples"],
                 "mae_final_loss": _last_loss(a.mae), "hashtag_final_loss": _last_loss(a.maws),
                 "export": str(Path(a.maws) / "export")},
        "plain": {"mae_samples": 0, "hashtag_samples": cost["plain_total_samples"],
                  "hashtag_final_loss": _last_loss(a.plain), "export": str(Path(a.plain) / "export")},
    }
    for k, arm in arms.items():
        arm["compute_s"] = (arm["mae_samples"] * cost["mae"]["s_per_image"]
                            + arm["hashtag_samples"] * cost["hashtag"]["s_per_image"])
    rec = {"model": cost["model"], "equal_compute": "equal measured step time (see step_cost)",
           "step_cost": cost, "arms": arms,
           "linear_probe": {k: {m: p[m] for m in ("top1", "top5", "mean_class_top1") if m in p}
                            for k, p in probes.items()}}
    write_text_atomic(a.out, json.dumps(rec, indent=2))
    lines = [f"MAWS vs plain hashtag pretraining, {cost['model']}, equal compute (MAE image = "
             f"{cost['time_ratio']:.3f} hashtag images by measured step time, {cost['flop_ratio']:.3f} by FLOPs)",
             "| arm | MAE images | hashtag images | est. compute s | linear probe top-1 | top-5 | mean per-class |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for k in ("maws", "plain", "random"):
        arm, p = arms.get(k, {"mae_samples": 0, "hashtag_samples": 0, "compute_s": 0.0}), probes.get(k, {})
        top1, top5, mean_class = (f"{100 * p[m]:.1f}%" if m in p else "-" for m in ("top1", "top5", "mean_class_top1"))
        if k in arms or p:
            lines.append(f"| {k} | {arm['mae_samples']} | {arm['hashtag_samples']} | {arm['compute_s']:.0f} | "
                         f"{top1} | {top5} | {mean_class} |")
    print("\n".join(lines) + f"\nwritten: {a.out}")
    return rec


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost", help="time a step of each; print the plain arm's total_samples")
    c.add_argument("--mae-config", required=True)
    c.add_argument("--pretrain-config", required=True)
    c.add_argument("--shards", required=True, help="for the number of classes of the hashtag head")
    c.add_argument("--out", required=True)
    c.add_argument("--steps", type=int, default=5)
    c.add_argument("--mae-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    c.add_argument("--pretrain-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    r = sub.add_parser("report", help="maws.json and a printed comparison")
    for name in ("--cost", "--mae", "--maws", "--plain", "--probe-maws", "--probe-plain", "--out"):
        r.add_argument(name, required=True)
    r.add_argument("--probe-random")
    a = p.parse_args(argv)
    cost_main(a) if a.cmd == "cost" else report_main(a)


if __name__ == "__main__":
    main()
