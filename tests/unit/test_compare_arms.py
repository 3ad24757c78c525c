"""`make compare`'s arm sets and the data each arm trains on (experiments/arms.py, plan.py): the
registry, the pairs, plan.json's per-arm corpus and index, and the guards that keep a plan or a run
directory only for the same data. Real tiny shard sets and sample indices (tests/helpers/shardkit.py);
step costs are given by hand here (tests/trainer/test_compare.py measures them)."""
import hashlib
import json

import pytest
import yaml

from experiments.arms import HASHTAG_REGNET, Corpus, arm_set, claims, demo_arms, pairs
from experiments.compare import check_run_data, run_data, train_stage
from experiments.compare import main as compare_main
from experiments.plan import (PlanConfig, check_arms_data, corpora_of, cost_key, data_ids, plan_main, plan_skeleton,
                              unmeasured, with_costs)
from experiments.report import claim_verdict
from tests.helpers.shardkit import make_shards, write_sample_index

SAMPLING = ["keywords_metaclip", "keywords_importance", "captions_metaclip", "captions_importance"]


def test_arm_sets_are_a_registry_and_pair_within_a_corpus():
    assert arm_set("papers", 0.25) == demo_arms(0.25)
    with pytest.raises(ValueError, match="unknown arm set 'caption'; valid: papers, sampling"):
        arm_set("caption")
    with pytest.raises(ValueError, match="unknown arm set"):
        claims("caption")
    arms = arm_set("sampling")
    assert list(arms) == SAMPLING
    for name, arm in arms.items():
        (stage,) = arm.stages
        assert (arm.family, arm.random, arm.corpus) == ("regnety", "regnety_002", name.split("_")[0])
        assert (stage.trainer, stage.config, stage.share, stage.index) == ("trainer.pretrain", HASHTAG_REGNET, 1.0,
                                                                          name.split("_")[1])
    # MetaCLIP's arm first (a - b = MetaCLIP - importance); never keywords against captions
    assert pairs(arms) == [("keywords_metaclip", "keywords_importance"), ("captions_metaclip", "captions_importance")]
    assert {(c.a, c.b) for c in claims("sampling").values()} == set(pairs(arms))
    assert all(not c.directional for c in claims("sampling").values())
    assert {(c.a, c.b) for c in claims("papers").values()} <= set(pairs(demo_arms()))


def corpus_dirs(root, name, n, classes, seed):
    """A corpus as jobs/shards.py and jobs/resample.py --shards leave it: shards, two indices, a vocab."""
    shards = make_shards(root / name / "shards", n=n, shard_size=8, num_classes=classes, seed=seed)
    importance = write_sample_index(shards, root / name / "samples", [[i % n for i in range(3 * n)]])
    metaclip = write_sample_index(shards, root / name / "samples-metaclip",
                                  [list(range(0, n, 2)), list(range(1, n, 2))])
    return {"shards": str(shards), "vocab": str(root / name / "vocab"),
            "indices": {"importance": str(importance), "metaclip": str(metaclip)}}


@pytest.fixture
def corpora(tmp_path):
    return {"keywords": corpus_dirs(tmp_path, "keywords", 24, 6, 0),
            "captions": corpus_dirs(tmp_path, "captions", 16, 4, 1)}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sampling_plan(corpora, out, costs=None):
    a = PlanConfig(arms="sampling", corpora=corpora, budget_cpu_s=60, out=str(out))
    cs = corpora_of(a)
    skeleton = plan_skeleton(a, arm_set("sampling"), cs, data_ids(cs))
    return a, skeleton, with_costs(skeleton, costs or {
        cost_key({"trainer": "trainer.pretrain", "config": HASHTAG_REGNET}, corpora["keywords"]["shards"]):
            {"step_cpu_s": 0.5, "batch_size": 64},
        cost_key({"trainer": "trainer.pretrain", "config": HASHTAG_REGNET}, corpora["captions"]["shards"]):
            {"step_cpu_s": 0.4, "batch_size": 64}})


def test_plan_records_each_arms_corpus_and_index(corpora, tmp_path):
    _, _, plan = sampling_plan(corpora, tmp_path / "compare")
    assert plan["arm_set"] == "sampling" and plan["corpora"] == corpora and list(plan["arms"]) == SAMPLING
    for name, arm in plan["arms"].items():
        corpus, index = name.split("_")
        c = corpora[corpus]
        (st,) = arm["stages"]
        assert (arm["corpus"], arm["shards"], st["index"], st["sample_index"]) == (corpus, c["shards"], index,
                                                                                   c["indices"][index])
        assert arm["shards_sha256"] == sha256(tmp_path / corpus / "shards" / "shards.json")
        assert st["index_sha256"] == sha256(tmp_path / corpus / f"samples{'-metaclip' * (index == 'metaclip')}"
                                            / "index" / "index.json")
        assert st["extra"] == [f"sample_index={c['indices'][index]}", f"vocab={c['vocab']}"]
        # one step cost per corpus's shards: both arms of a corpus get the same samples
        assert st["train_samples"] == {"keywords": 120 * 64, "captions": 150 * 64}[corpus]  # 60 / 0.5, 60 / 0.4 steps
    # the same corpora from a YAML file
    (tmp_path / "corpora.yaml").write_text(yaml.safe_dump(corpora))
    from_file = PlanConfig(arms="sampling", corpora=str(tmp_path / "corpora.yaml"), budget_cpu_s=60, out="x")
    assert corpora_of(from_file) == {n: Corpus(c["shards"], c["vocab"], c["indices"]) for n, c in corpora.items()}


def test_todays_command_line_is_the_corpus_default(corpora):
    k = corpora["keywords"]
    a = PlanConfig(shards=k["shards"], sample_index=k["indices"]["importance"], vocab=k["vocab"], budget_cpu_s=60,
                   out="x")
    cs = corpora_of(a)
    assert cs == {"default": Corpus(k["shards"], k["vocab"], {"importance": k["indices"]["importance"]})}
    arms = plan_skeleton(a, arm_set("papers"), cs, data_ids(cs))["arms"]
    hashtag = [f"sample_index={k['indices']['importance']}", f"vocab={k['vocab']}"]  # as plan gave before arm sets
    assert arms["hashtag"]["stages"][0]["extra"] == hashtag and arms["swav"]["stages"][0]["extra"] == []
    assert [s["extra"] for s in arms["vit_mae_hashtag"]["stages"]] == [[], hashtag]
    assert arms["random"]["stages"] == [] and "shards" not in arms["random"]
    with pytest.raises(ValueError, match="arm keywords_metaclip trains on corpus 'keywords'; corpora given: default"):
        check_arms_data(arm_set("sampling"), cs)


def test_wrong_corpora_fail_naming_what(corpora, tmp_path, capsys):
    no_metaclip = {**corpora, "captions": {**corpora["captions"], "indices": {"importance": "x"}}}
    with pytest.raises(ValueError, match="corpus 'captions''s index 'metaclip'; its indices: importance"):
        check_arms_data(arm_set("sampling"), corpora_of(PlanConfig(arms="sampling", corpora=no_metaclip,
                                                                   budget_cpu_s=1, out="x")))
    swapped = {**corpora, "keywords": {**corpora["keywords"], "indices": corpora["captions"]["indices"]}}
    with pytest.raises(ValueError, match="corpus keywords's index importance .* was drawn for another shard set"):
        data_ids(corpora_of(PlanConfig(arms="sampling", corpora=swapped, budget_cpu_s=1, out="x")))
    with pytest.raises(ValueError, match="corpus 'captions': expected"):
        Corpus.from_dict("captions", {"shards": "s"})
    with pytest.raises(ValueError, match="corpus 'k': shards, vocab and every index must name a directory"):
        Corpus.from_dict("k", {"shards": "s", "vocab": "v", "indices": {"metaclip": None}})
    for argv, message in ((["arms=nope", "shards=s", "sample_index=i", "vocab=v"], "unknown arm set arms='nope'"),
                          (["shards=s", "vocab=v"], "missing: sample_index"),
                          (["corpora={k: {shards: s, vocab: v}}", "shards=s"], "give corpora= or shards/")):
        with pytest.raises(SystemExit) as e:
            compare_main(["plan", f"out={tmp_path}", "budget_cpu_s=10", *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_plan_is_kept_only_for_the_same_arms_and_data(corpora, tmp_path):
    a, skeleton, plan = sampling_plan(corpora, tmp_path / "compare")
    (tmp_path / "compare").mkdir()
    (tmp_path / "compare" / "plan.json").write_text(json.dumps(plan))
    assert plan_main(a) == plan  # kept as written: nothing measured (the hand step costs are still there)
    assert unmeasured(plan) == skeleton
    # MetaCLIP's index of the keywords redrawn in place (another cap): same paths, other data
    write_sample_index(tmp_path / "keywords" / "shards", tmp_path / "keywords" / "samples-metaclip2", [[0, 1, 2]])
    (tmp_path / "keywords" / "samples-metaclip" / "index" / "index.json").write_text(
        (tmp_path / "keywords" / "samples-metaclip2" / "index" / "index.json").read_text())
    _, redrawn, _ = sampling_plan(corpora, tmp_path / "compare")
    changed = [n for n in SAMPLING if redrawn["arms"][n] != skeleton["arms"][n]]
    assert unmeasured(plan) != redrawn and changed == ["keywords_metaclip"]


def test_a_run_trained_on_other_data_is_refused(corpora, tmp_path):
    out = tmp_path / "compare"
    _, _, plan = sampling_plan(corpora, out)
    out.mkdir()
    (out / "plan.json").write_text(json.dumps(plan))
    arm = plan["arms"]["keywords_metaclip"]
    base = out / "runs" / "keywords_metaclip-seed0"
    base.mkdir(parents=True)
    (base / "data.json").write_text(json.dumps(run_data(arm)))  # as `run` writes it before the first stage
    check_run_data(base, arm)
    # the lead swaps the corpora's metaclip indices: the run was trained on the keywords' one
    other = {**arm, "stages": [{**arm["stages"][0], "sample_index": corpora["captions"]["indices"]["metaclip"],
                                "index_sha256": "0" * 64}]}
    with pytest.raises(SystemExit, match=r"was trained on other data: stage0.index_sha256 .*; stage0.sample_index"):
        check_run_data(base, other)
    # `run` checks every run directory before training any: the last arm's is wrong, no arm starts
    last = out / "runs" / "captions_importance-seed0"
    last.mkdir()
    (last / "data.json").write_text(json.dumps(run_data(other)))
    with pytest.raises(SystemExit, match="captions_importance-seed0 was trained on other data"):
        compare_main(["run", f"out={out}", "data=unused", "seeds=[0]"])
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["captions_importance-seed0", "keywords_metaclip-seed0"]
    assert sorted(p.name for p in base.iterdir()) == ["data.json"]
    # a stage's own config.yaml (the trainer's) is checked too: a run directory from before data.json
    st = arm["stages"][0]
    run_dir = base / "stage0-pretrain"
    run_dir.mkdir()
    trained = {"shards": arm["shards"], "sample_index": st["sample_index"], "vocab": corpora["keywords"]["vocab"],
               "total_samples": st["train_samples"]}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(trained))
    (run_dir / "result.json").write_text("{}")
    assert train_stage(plan, arm, st, run_dir, 0, None) == 0.0  # finished, same data: kept
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**trained, "sample_index": "elsewhere"}))
    with pytest.raises(SystemExit, match=f"sample_index=elsewhere \\(the plan now gives {st['sample_index']}"):
        train_stage(plan, arm, st, run_dir, 0, None)


def test_claim_verdicts_state_the_images_needed():
    keywords, regnety = claims("sampling")["keywords"], claims("papers")["regnety"]
    flat = {"significant": False, "diff": 0.02, "ci95": [-0.01, 0.05], "images_needed": 2400}
    verdict, line = claim_verdict(keywords, flat)
    assert verdict == "no significant difference"
    assert line == ("**MetaCLIP balancing vs SWAG importance resampling, keywords**: on this task, linear probe "
                    "keywords_metaclip - keywords_importance = +2.0 points [-1.0, +5.0]: no significant difference "
                    "(~2400 val images would detect a difference this size with 80% power).")
    worse = {"significant": True, "diff": -0.04, "ci95": [-0.07, -0.01], "images_needed": None}
    assert claim_verdict(keywords, worse)[0] == "keywords_importance is better"
    assert claim_verdict(regnety, worse)[0] == "is reversed"
    assert claim_verdict(regnety, flat)[0] == "points the papers' way but is not significant"
    assert "val images would" not in claim_verdict(regnety, {**flat, "diff": 0.0})[1]
