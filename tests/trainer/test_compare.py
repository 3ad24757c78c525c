"""`make compare`'s own parts (experiments/): the arms and their budgets, the measured step cost of
the real trainers, the command line, and the report from evaluated runs (its statistics:
tests/unit/test_compare_stats.py)."""
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from experiments.arms import demo_arms, pairs, samples_for
from experiments.compare import main as compare_main
from tests.helpers.shardkit import make_shards


def test_arms_pairs_and_budgets():
    arms = demo_arms(0.25)
    assert pairs(arms) == [("hashtag", "swav"), ("hashtag", "random"), ("swav", "random"),
                           ("vit_mae_hashtag", "vit_hashtag"), ("vit_mae_hashtag", "vit_random"),
                           ("vit_hashtag", "vit_random")]
    mae, hashtag = arms["vit_mae_hashtag"].stages
    assert (mae.trainer, mae.share, hashtag.share, hashtag.init_from_previous) == ("trainer.mae", 0.25, 0.75, True)
    assert all(sum(s.share for s in a.stages) == pytest.approx(1.0) for a in arms.values() if a.stages)
    assert samples_for(100.0, 1.0, 0.3, 64) == 333 * 64  # floor(100 / 0.3) batches
    assert samples_for(100.0, 0.5, 0.3, 64) == 166 * 64
    assert samples_for(1.0, 0.5, 3.0, 64) == 64  # at least one batch
    with pytest.raises(ValueError, match="mae_share"):
        demo_arms(1.0)
    with pytest.raises(ValueError, match="step cost > 0"):
        samples_for(100.0, 1.0, 0.0, 64)


def test_step_cost_of_the_real_trainers(tmp_path):
    from experiments.step_cost import step_cost

    shards = make_shards(tmp_path / "s", n=32, shard_size=16, size=40)
    common = [f"shards={shards}", "model=regnety_002", "img_size=32", "batch_size=8", "device=cpu"]
    hashtag = step_cost("trainer.pretrain", common, steps=2, warmup=1)
    swav = step_cost("trainer.swav", [*common, "local_crops=2", "local_size=16", "prototypes=16", "hidden_dim=32",
                                      "dim=8"], steps=2, warmup=1)
    for c in (hashtag, swav):
        assert c["batch_size"] == 8 and c["step_cpu_s"] > 0 and c["cpu_s_per_image"] == c["step_cpu_s"] / 8
    # 2 views of 32 px + 2 of 16 px against one of 32 px: more than the two global views, less than
    # four of them (a 16 px view costs less, though not 1/4: the last stages are 1 x 1 either way)
    assert 2.0 < swav["flops_per_step"] / hashtag["flops_per_step"] < 4.0
    assert not any((tmp_path / "s").glob("run*"))  # the scratch run directory is gone
    with pytest.raises(ValueError, match="unknown trainer"):
        step_cost("trainer.nope", common)


def test_step_cost_of_mae_and_of_hashtag_pretraining_of_one_vit(tmp_path):
    """The MAWS arm's two stages, timed as plan times them."""
    from experiments.step_cost import step_cost

    shards = make_shards(tmp_path / "s", n=16, shard_size=8, num_classes=7)
    common = [f"shards={shards}", "batch_size=4", "model=test_vit", "img_size=64", "workers=0", "device=cpu"]
    mae = step_cost("trainer.mae", [*common, "decoder_depth=1", "decoder_width=32", "decoder_heads=2"], steps=2,
                    warmup=1)
    hashtag = step_cost("trainer.pretrain", [*common, "recipe=adamw"], steps=2, warmup=1)
    for c in (mae, hashtag):
        assert len(c["cpu_times_s"]) == 2 and c["step_cpu_s"] == min(c["cpu_times_s"]) > 0
    # both see 64 px images (16 patches); the MAE's blocks run on 4 + 1 tokens, the classifier's
    # on 16 + 1, but both embed all 16 patches (as MAE's reference code does) and the MAE adds a
    # decoder over 17 tokens: fewer FLOPs, not 4x fewer (measured 0.50 for this tiny model)
    assert 0.2 < mae["flops_per_step"] / hashtag["flops_per_step"] < 0.75


def test_command_line_names_the_step_and_its_keys(tmp_path, capsys):
    def exits(argv):
        with pytest.raises(SystemExit) as e:
            compare_main(argv)
        out = capsys.readouterr()
        return e.value.code, out.out, out.err

    code, out, _ = exits(["--help"])
    assert code == 0 and out.startswith("usage: python -m experiments.compare {plan|run|report}")
    assert all(f"  {step} " in out for step in ("plan", "run", "report"))
    code, out, _ = exits(["plan", "--help"])
    assert code == 0 and out.startswith("usage: python -m experiments.compare plan ")
    assert all(re.search(rf"^  {k} .*required", out, re.M) for k in ("shards", "sample_index", "vocab", "budget_cpu_s"))
    code, _, err = exits([])
    assert code == 2 and "no step given; valid: plan, run, report" in err
    code, _, err = exits(["train", "out=x"])
    assert code == 2 and "unknown step 'train'" in err
    code, _, err = exits(["plan", f"out={tmp_path}", "shards=s", "vocab=v", "budget_cpu_s=10"])
    assert code == 2 and "missing required keys: sample_index" in err
    code, _, err = exits(["run", f"out={tmp_path}", "data=d", "seeds=0"])
    assert code == 2 and "config key 'seeds': expected a list" in err
    code, _, err = exits(["report", f"out={tmp_path}", "json=x.json", "samples=3"])
    assert code == 2 and "unknown config keys ['samples']" in err


def write_run(out, arm, seed, linear, few):
    d = out / "runs" / f"{arm}-seed{seed}" / "eval"
    d.mkdir(parents=True)
    (d / "linear.json").write_text(json.dumps({"val_correct": [int(x) for x in linear]}))
    (d / "few_shot.json").write_text(json.dumps({"k": {"5": {"val_correct": [float(x) for x in few]}}}))


def test_report_from_evaluated_runs(tmp_path, capsys):
    arms = {name: {"family": a.family, "random": a.random,
                   "stages": [{"trainer": s.trainer, "config": s.config, "share": s.share, "train_samples": 640,
                               "step_cost_s": 0.5} for s in a.stages]}
            for name, a in demo_arms().items()}
    plan = {"budget_cpu_s": 60.0, "arms": arms, "step_costs": {}}
    out = tmp_path / "compare"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps(plan))
    rng = np.random.default_rng(0)
    v = 400
    accuracy = {"hashtag": 0.60, "swav": 0.45, "random": 0.44, "vit_mae_hashtag": 0.50, "vit_hashtag": 0.50,
                "vit_random": 0.40}
    for arm, p in accuracy.items():
        for seed in range(3):
            write_run(out, arm, seed, (rng.random(v) < p).astype(int), rng.random(v) * 2 * p / 2 + p / 2)
    compare_main(["report", f"out={out}", f"json={tmp_path / 'compare.json'}"])
    rec = json.loads((tmp_path / "compare.json").read_text())
    assert rec["val_images"] == v and rec["budget_cpu_s"] == 60.0 and set(rec["arms"]) == set(accuracy)
    h = rec["arms"]["hashtag"]
    lin = np.array([json.loads((out / "runs" / f"hashtag-seed{s}" / "eval" / "linear.json").read_text())["val_correct"]
                    for s in range(3)])
    assert h["linear_top1"]["mean"] == pytest.approx(lin.mean())
    assert h["linear_top1"]["runs"] == pytest.approx(lin.mean(axis=1).tolist())
    lo, hi = h["linear_top1"]["ci95"]
    images_only = 2 * 1.96 * math.sqrt(0.24 / (3 * v))  # the CI's width were the seeds not resampled
    assert lo < lin.mean() < hi and images_only < hi - lo < 3 * images_only
    assert h["train_samples"] == 640 and h["step_cost_s"] == 0.5 and rec["arms"]["random"]["train_samples"] == 0
    assert set(h["few_shot_5_top1"]) >= {"mean", "ci95", "runs"}
    assert rec["pairs"]["hashtag - swav"]["linear_top1"]["significant"]           # 15 points on 1200 answers
    assert not rec["pairs"]["vit_mae_hashtag - vit_hashtag"]["linear_top1"]["significant"]  # same accuracy
    assert rec["papers"]["regnety"]["verdict"] == "holds"
    assert "not significant" in rec["papers"]["vit"]["verdict"]
    printed = capsys.readouterr().out
    assert "| hashtag | 3 |" in printed and "the ordering holds" in printed and "not significant" in printed
    with Image.open(out / "compare.png") as im:
        assert im.format == "PNG"
    (out / "runs" / "swav-seed0" / "eval" / "linear.json").write_text(json.dumps({"val_correct": [1] * (v - 1)}))
    with pytest.raises((SystemExit, ValueError)):
        compare_main(["report", f"out={out}", f"json={tmp_path / 'c2.json'}"])
