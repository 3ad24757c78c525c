r"""`python -m experiments.compare plan`: every stage's training samples at equal measured compute,
and the data each arm trains on, in plan.json.

    python -m experiments.compare plan shards=S sample_index=I vocab=V budget_cpu_s=150 out=DIR
    python -m experiments.compare plan arms=sampling corpora=CORPORA.yaml budget_cpu_s=150 out=DIR

`shards`, `sample_index` and `vocab` are the one corpus `default` (I its `importance` index), what
the papers' arms read; `corpora` names several, inline (YAML) or as a YAML/JSON file:

    keywords: {shards: build/demo/shards, vocab: build/demo/vocab,
               indices: {importance: build/demo/samples, metaclip: build/demo/samples-metaclip}}
    captions: {shards: build/demo/captions/shards, ...}

One step of each distinct (trainer, config, shards) is timed (experiments/step_cost.py) and each
stage gets share x budget CPU seconds of such steps, in whole batches (experiments/arms.py).
plan.json records, per arm, its corpus, shards and each stage's sample index, with the sha256 of
the shards' shards.json and of each index's index.json: a plan of the same arms on the same data is
kept (its runs resume), and a run directory trained on other data is refused (compare.py's run).
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.arms import ARM_SETS, DEFAULT_CORPUS, IMPORTANCE, Arm, Corpus, arm_set, samples_for
from pipeline.atomic import write_text_atomic
from schemas.metadata import MetadataError
from schemas.sample_index import SampleIndexMeta, index_file, shard_set_sha256
from schemas.shard_set import shard_set_file
from trainer.config import ConfigError, key

# the hashtag trainer's keys for a sample index bound to the shards and for its vocabulary
# (trainer/config.py ShardTrainConfig, trainer/pretrain.py)
TRAINER_SAMPLE_INDEX_KEY = "sample_index"
TAKES_VOCAB = ("trainer.pretrain",)
MEASURED = ("step_cost_s", "batch_size", "train_samples")  # a stage's fields that the step cost gives
LEGACY_KEYS = ("shards", "sample_index", "vocab")


@dataclass(frozen=True)
class PlanConfig:
    budget_cpu_s: float = key(help="training CPU seconds of each arm")
    out: str = key(help="compare directory: plan.json, runs/, compare.md, compare.png")
    arms: str = key("papers", f"arm set: {' | '.join(ARM_SETS)} (experiments/arms.py)")
    corpora: dict | str | None = key(None, "corpus name -> {shards: DIR, vocab: DIR, indices: {NAME: DIR}}, inline "
                                           "(YAML) or a YAML/JSON file; instead of shards, sample_index and vocab")
    shards: str | None = key(None, f"finished shard directory (jobs/shards.py): with sample_index and vocab, the "
                                   f"corpus {DEFAULT_CORPUS!r}")
    sample_index: str | None = key(None, f"sample index bound to the shards (jobs/resample.py): the index "
                                         f"{IMPORTANCE!r} of the corpus {DEFAULT_CORPUS!r}, for hashtag pretraining")
    vocab: str | None = key(None, "vocabulary directory (jobs/vocab.py) of the shards' labels, for hashtag pretraining")
    mae_share: float = key(0.5, "the MAWS arm's share of its budget for MAE")
    nproc: int = key(1, "torchrun --nproc_per_node of each training run")

    def __post_init__(self):
        if self.budget_cpu_s <= 0 or self.nproc < 1:
            raise ValueError(f"need budget_cpu_s > 0 and nproc >= 1, got {self.budget_cpu_s}, {self.nproc}")
        if self.arms not in ARM_SETS:
            raise ConfigError(f"unknown arm set arms={self.arms!r}; valid: {', '.join(ARM_SETS)}")
        given = [k for k in LEGACY_KEYS if getattr(self, k) is not None]
        if self.corpora is not None and given:
            raise ConfigError(f"give corpora= or {'/'.join(LEGACY_KEYS)}=, not both "
                              f"(got corpora and {', '.join(given)})")
        if self.corpora is None and len(given) < len(LEGACY_KEYS):
            missing = [k for k in LEGACY_KEYS if k not in given]
            raise ConfigError(f"give shards=, sample_index= and vocab= (the corpus {DEFAULT_CORPUS!r}), or corpora=; "
                              f"missing: {', '.join(missing)}")


def corpora_of(a: PlanConfig) -> dict[str, Corpus]:
    """The corpora of the command line, by name (see the module's docstring)."""
    if a.corpora is None:
        return {DEFAULT_CORPUS: Corpus(a.shards, a.vocab, {IMPORTANCE: a.sample_index})}
    raw = a.corpora
    if isinstance(raw, str):
        path = Path(raw)
        if not path.is_file():
            raise ValueError(f"corpora={raw}: no such file (give a YAML/JSON file or an inline mapping)")
        raw = yaml.safe_load(path.read_text())  # JSON is YAML
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"corpora: expected a mapping of corpus name to {{shards, vocab, indices}}, got {raw!r}")
    return {str(name): Corpus.from_dict(str(name), c) for name, c in raw.items()}


def check_arms_data(arms: dict[str, Arm], corpora: dict[str, Corpus]) -> None:
    """Every arm that trains names a corpus given, and each of its stages an index of that corpus."""
    for name, arm in arms.items():
        if not arm.stages:
            continue
        if arm.corpus not in corpora:
            raise ValueError(f"arm {name} trains on corpus {arm.corpus!r}; corpora given: {', '.join(corpora)}")
        have = corpora[arm.corpus].indices
        for st in arm.stages:
            if st.index is not None and st.index not in have:
                raise ValueError(f"arm {name} trains on corpus {arm.corpus!r}'s index {st.index!r}; its indices: "
                                 f"{', '.join(have) or 'none'}")


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ValueError(f"{what}: no {path}")
    return path.read_bytes()


def data_ids(corpora: dict[str, Corpus]) -> dict[str, dict]:
    """{corpus: {"shards_sha256", "indices": {name: sha256 of its index.json}}}: what identifies the
    data, so that data rebuilt in place is other data. An index drawn for another shard set than
    its corpus's is refused here, before any training."""
    ids = {}
    for name, c in corpora.items():
        shards_json = _read_bytes(shard_set_file(c.shards), f"corpus {name}'s shards (jobs/shards.py)")
        indices = {}
        for index, d in c.indices.items():
            path = index_file(d)
            raw = _read_bytes(path, f"corpus {name}'s index {index} (jobs/resample.py --shards)")
            try:
                meta = SampleIndexMeta.from_json(raw.decode("utf-8", errors="replace"), str(path))
            except MetadataError as e:
                raise ValueError(f"corpus {name}'s index {index}: {e}") from e
            if not meta.bound_to(shards_json):
                raise ValueError(f"corpus {name}'s index {index} ({d}) was drawn for another shard set than its "
                                 f"shards {c.shards}: rerun jobs/resample.py --shards {c.shards}, or fix corpora")
            indices[index] = hashlib.sha256(raw).hexdigest()
        ids[name] = {"shards_sha256": shard_set_sha256(shards_json), "indices": indices}
    return ids


def stage_args(trainer: str, index_dir: str | None, vocab: str) -> list[str]:
    """The data keys of a stage's command line beside shards= (the trainer's sample index and vocabulary)."""
    return [*([] if index_dir is None else [f"{TRAINER_SAMPLE_INDEX_KEY}={index_dir}"]),
            *([f"vocab={vocab}"] if trainer in TAKES_VOCAB else [])]


def plan_skeleton(a: PlanConfig, arms: dict[str, Arm], corpora: dict[str, Corpus], ids: dict[str, dict]) -> dict:
    """plan.json without what the step costs give (MEASURED, step_costs): the arms, their data and
    its sha256s. Two plans with equal skeletons train the same runs."""
    plan = {"arm_set": a.arms, "budget_cpu_s": a.budget_cpu_s, "mae_share": a.mae_share, "nproc": a.nproc,
            "corpora": {n: {"shards": c.shards, "vocab": c.vocab, "indices": dict(c.indices)}
                        for n, c in corpora.items()},
            "arms": {}}
    for name, arm in arms.items():
        rec = {"family": arm.family, "random": arm.random, "corpus": arm.corpus, "stages": []}
        if arm.stages:
            c = corpora[arm.corpus]
            rec.update(shards=c.shards, shards_sha256=ids[arm.corpus]["shards_sha256"])
        for st in arm.stages:
            index_dir = None if st.index is None else c.indices[st.index]
            rec["stages"].append({"trainer": st.trainer, "config": st.config, "share": st.share,
                                  "init_from_previous": st.init_from_previous, "index": st.index,
                                  "sample_index": index_dir,
                                  "index_sha256": None if st.index is None else ids[arm.corpus]["indices"][st.index],
                                  "extra": stage_args(st.trainer, index_dir, c.vocab)})
        plan["arms"][name] = rec
    return plan


def cost_key(stage: dict, shards: str) -> str:
    """Step costs are measured once per (trainer, config, shards): the index changes which images
    a batch holds, not what a step costs."""
    return f"{stage['trainer']}:{stage['config']}:{shards}"


def unmeasured(plan: dict) -> dict:
    """A plan.json less what the step costs gave: comparable with plan_skeleton."""
    arms = {n: {**arm, "stages": [{k: v for k, v in s.items() if k not in MEASURED} for s in arm["stages"]]}
            for n, arm in plan.get("arms", {}).items()}
    return {**{k: v for k, v in plan.items() if k != "step_costs"}, "arms": arms}


def with_costs(skeleton: dict, costs: dict[str, dict]) -> dict:
    """The plan: each stage's step cost, batch and training samples (share x budget of its steps)."""
    plan = json.loads(json.dumps(skeleton))
    for arm in plan["arms"].values():
        for st in arm["stages"]:
            c = costs[cost_key(st, arm["shards"])]
            st.update(step_cost_s=c["step_cpu_s"], batch_size=c["batch_size"],
                      train_samples=samples_for(plan["budget_cpu_s"], st["share"], c["step_cpu_s"], c["batch_size"]))
    plan["step_costs"] = costs
    return plan


def measure(skeleton: dict) -> dict[str, dict]:
    """One step cost per distinct (trainer, config, shards), with the first such stage's data keys."""
    from experiments.step_cost import step_cost

    costs: dict[str, dict] = {}
    for arm in skeleton["arms"].values():
        for st in arm["stages"]:
            k = cost_key(st, arm["shards"])
            if k not in costs:
                costs[k] = step_cost(st["trainer"], ["--config", st["config"], f"shards={arm['shards']}", *st["extra"]])
                print(f"step cost {k}: {costs[k]['step_cpu_s']:.3f} CPU-s ({costs[k]['step_wall_s']:.3f} s wall) "
                      f"per batch of {costs[k]['batch_size']}", file=sys.stderr)
    return costs


def plan_main(a: PlanConfig) -> dict:
    arms, corpora = arm_set(a.arms, a.mae_share), corpora_of(a)
    check_arms_data(arms, corpora)
    skeleton = plan_skeleton(a, arms, corpora, data_ids(corpora))
    path = Path(a.out) / "plan.json"
    if path.exists():  # a plan of the same arms and data is kept: its runs resume, their lengths unchanged
        old = json.loads(path.read_text())
        if unmeasured(old) == skeleton:
            print(f"compare plan: keeping {path} (same arms, budget, data and processes)", file=sys.stderr)
            return old
        print(f"compare plan: {path} was planned for other arms, budget, data or processes: planning anew "
              f"(run refuses run directories trained on other data)", file=sys.stderr)
    plan = with_costs(skeleton, measure(skeleton))
    write_text_atomic(path, json.dumps(plan, indent=2))
    for name, arm in plan["arms"].items():
        print(f"{name}: " + (" then ".join(f"{s['trainer']} {s['train_samples']} samples"
                                           + (f" ({arm['corpus']} {s['index']})" if s["index"] else "")
                                           for s in arm["stages"]) or "random init"))
    return plan
