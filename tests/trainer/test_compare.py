"""`make compare`'s own parts (experiments/): the arms and their budgets, the measured step cost of
the real trainers, the command line, and the report from evaluated runs (its statistics:
tests/unit/test_compare_stats.py)."""
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from experiments.arms import arm_set, demo_arms, pairs, samples_for
from experiments.compare import main as compare_main
from tests.helpers.shardkit import make_shards, write_sample_index


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
    assert all(re.search(rf"^  {k} .*required", out, re.M) for k in ("out", "budget_cpu_s"))
    assert re.search(r"^  arms .* papers .*papers \| sampling", out, re.M)
    code, _, err = exits([])
    assert code == 2 and "no step given; valid: plan, run, report" in err
    code, _, err = exits(["train", "out=x"])
    assert code == 2 and "unknown step 'train'" in err
    code, _, err = exits(["plan", f"out={tmp_path}", "shards=s", "vocab=v", "budget_cpu_s=10"])
    assert code == 2 and "or corpora=; missing: sample_index" in err
    code, _, err = exits(["run", f"out={tmp_path}", "data=d", "seeds=0"])
    assert code == 2 and "config key 'seeds': expected a list" in err
    code, _, err = exits(["report", f"out={tmp_path}", "json=x.json", "samples=3"])
    assert code == 2 and "unknown config keys ['samples']" in err


def write_run(out, arm, seed, linear, few):
    d = out / "runs" / f"{arm}-seed{seed}" / "eval"
    d.mkdir(parents=True)
    (d / "linear.json").write_text(json.dumps({"val_correct": [int(x) for x in linear]}))
    (d / "few_shot.json").write_text(json.dumps({"k": {"5": {"val_correct": [float(x) for x in few]}}}))


def hand_plan(arm_set_name, arms):
    """plan.json as `plan` writes it, with hand step costs: 640 samples per stage at 0.5 CPU-s a step."""
    corpora = {a.corpus: {"shards": f"{a.corpus}/shards", "vocab": f"{a.corpus}/vocab",
                          "indices": {"importance": f"{a.corpus}/samples", "metaclip": f"{a.corpus}/samples-metaclip"}}
               for a in arms.values()}
    return {"arm_set": arm_set_name, "budget_cpu_s": 60.0, "corpora": corpora, "step_costs": {},
            "arms": {name: {"family": a.family, "random": a.random, "corpus": a.corpus,
                            "stages": [{"trainer": s.trainer, "config": s.config, "share": s.share, "index": s.index,
                                        "train_samples": 640, "step_cost_s": 0.5} for s in a.stages]}
                     for name, a in arms.items()}}


def test_report_from_evaluated_runs(tmp_path, capsys):
    plan = hand_plan("papers", demo_arms())
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
    assert rec["claims"]["regnety"]["verdict"] == "holds"
    assert "not significant" in rec["claims"]["vit"]["verdict"]
    printed = capsys.readouterr().out
    assert "| hashtag | 3 |" in printed and "the ordering holds" in printed and "not significant" in printed
    with Image.open(out / "compare.png") as im:
        assert im.format == "PNG"
    (out / "runs" / "swav-seed0" / "eval" / "linear.json").write_text(json.dumps({"val_correct": [1] * (v - 1)}))
    with pytest.raises((SystemExit, ValueError)):
        compare_main(["report", f"out={out}", f"json={tmp_path / 'c2.json'}"])


def test_report_of_the_sampling_arms(tmp_path, capsys):
    """MetaCLIP vs importance within each corpus; keywords and captions arms side by side, not paired."""
    out = tmp_path / "compare"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps(hand_plan("sampling", arm_set("sampling"))))
    rng = np.random.default_rng(1)
    v = 400
    accuracy = {"keywords_metaclip": 0.40, "keywords_importance": 0.55, "captions_metaclip": 0.50,
                "captions_importance": 0.48}
    for arm, p in accuracy.items():
        base = (rng.random(v) < p).astype(int)
        for seed in range(2):  # the seeds of an arm alike (seed 1 gets 2 more right): image noise dominates
            run = (rng.random(v) < p).astype(int) if arm.startswith("keywords") else base.copy()
            run[:2 * seed] = 1
            write_run(out, arm, seed, run, rng.random(v) * p + p / 2)
    compare_main(["report", f"out={out}", f"json={tmp_path / 'compare.json'}"])
    rec = json.loads((tmp_path / "compare.json").read_text())
    assert rec["arm_set"] == "sampling" and set(rec["arms"]) == set(accuracy)
    assert set(rec["pairs"]) == {"keywords_metaclip - keywords_importance", "captions_metaclip - captions_importance"}
    kw, cap = rec["claims"]["keywords"], rec["claims"]["captions"]
    assert kw["pair"] == ["keywords_metaclip", "keywords_importance"] and kw["significant"]  # 15 points on 800 answers
    assert kw["verdict"] == "keywords_importance is better" and kw["diff"] < 0
    lin = {a: np.mean([json.loads((out / "runs" / f"{a}-seed{s}" / "eval" / "linear.json").read_text())["val_correct"]
                       for s in range(2)]) for a in ("captions_metaclip", "captions_importance")}
    assert cap["diff"] == pytest.approx(lin["captions_metaclip"] - lin["captions_importance"])
    assert cap["verdict"] == "no significant difference" and not cap["significant"] and cap["images_needed"] > v
    assert rec["arms"]["captions_metaclip"]["corpus"] == "captions"
    assert rec["arms"]["captions_metaclip"]["stages"][0]["index"] == "metaclip"
    printed = capsys.readouterr().out
    assert "**MetaCLIP balancing vs SWAG importance resampling, captions**" in printed
    assert f"no significant difference (~{cap['images_needed']} val images would detect" in printed
    assert "arms of different corpora are not paired" in printed
    assert ("- corpus keywords: shards keywords/shards, vocab keywords/vocab; indices importance keywords/samples, "
            "metaclip keywords/samples-metaclip") in printed


def test_plan_measures_once_per_trainer_config_and_shards(tmp_path):
    """Two arms of one corpus and config share one measured step, so their samples; another
    corpus's shards are measured apart. The real trainer's step, on a small config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from experiments.plan import measure, with_costs

    config = tmp_path / "tiny.yaml"
    config.write_text("model: regnety_002\nimg_size: 32\nbatch_size: 8\ndevice: cpu\n")
    arms = {}
    for corpus, classes in (("k", 6), ("c", 4)):
        shards = make_shards(tmp_path / corpus / "shards", n=16, shard_size=8, num_classes=classes)
        (tmp_path / corpus / "vocab").mkdir()
        pq.write_table(pa.table({"label": list(range(classes)), "name": [f"l{i}" for i in range(classes)]}),
                       tmp_path / corpus / "vocab" / "vocab.parquet")
        for index in ("importance", "metaclip"):
            idx = write_sample_index(shards, tmp_path / corpus / index, [list(range(0, 16, 1 + (index == "metaclip")))])
            arms[f"{corpus}_{index}"] = {"corpus": corpus, "shards": str(shards), "stages": [
                {"trainer": "trainer.pretrain", "config": str(config), "share": 1.0,
                 "extra": [f"sample_index={idx}", f"vocab={tmp_path / corpus / 'vocab'}"]}]}
    skeleton = {"budget_cpu_s": 30.0, "arms": arms}
    costs = measure(skeleton)
    assert sorted(costs) == sorted(f"trainer.pretrain:{config}:{tmp_path / c / 'shards'}" for c in ("k", "c"))
    plan = with_costs(skeleton, costs)
    samples = {n: a["stages"][0]["train_samples"] for n, a in plan["arms"].items()}
    assert samples["k_importance"] == samples["k_metaclip"] and samples["c_importance"] == samples["c_metaclip"]
    k = costs[f"trainer.pretrain:{config}:{tmp_path / 'k' / 'shards'}"]
    assert k["batch_size"] == 8 and samples["k_metaclip"] == max(1, int(30.0 / k["step_cpu_s"])) * 8
