"""The arms of `make compare` (SWAG section 5's comparison; MAWS's; MetaCLIP's balancing against
SWAG's resampling): what each pretrains, in stages, with which trainer and config, on which
corpus and sample index, and which share of the equal compute budget each stage gets. Arms
compared with each other share an architecture (a family) and a corpus. An arm without stages is
its family's random initialisation, evaluated as is.

Arm sets are an explicit registry (ARM_SETS): `papers` (the default) and `sampling`; each names
its claims, the pairs whose verdict the report states."""
from __future__ import annotations

from dataclasses import dataclass

# the corpus of `plan shards=S sample_index=I vocab=V`, I its index IMPORTANCE (jobs/resample.py's default)
DEFAULT_CORPUS = "default"
IMPORTANCE, METACLIP = "importance", "metaclip"


@dataclass(frozen=True)
class Stage:
    trainer: str                 # torchrun -m <trainer>
    config: str                  # its --config
    share: float                 # of the arm's budget
    init_from_previous: bool = False  # init_from=<the previous stage's export> (MAWS)
    index: str | None = None     # the corpus's sample index it trains on; None: each stored image once per epoch


@dataclass(frozen=True)
class Arm:
    family: str
    random: str                  # the family's timm trunk (the random arm's model=random:<name>)
    stages: tuple[Stage, ...] = ()
    corpus: str = DEFAULT_CORPUS  # the corpus (shards, vocab, indices) every stage reads


@dataclass(frozen=True)
class Claim:
    """A pair whose verdict the report states: a - b on the linear probe."""
    a: str
    b: str
    text: str
    directional: bool = True     # the papers claim a > b; False: which of the two is better is the question


@dataclass(frozen=True)
class Corpus:
    """A corpus the arms train on: its shards (jobs/shards.py), vocabulary (jobs/vocab.py) and
    sample indices bound to the shards (jobs/resample.py --shards), by name."""
    shards: str
    vocab: str
    indices: dict[str, str]

    @classmethod
    def from_dict(cls, name: str, raw) -> Corpus:
        """`{shards: DIR, vocab: DIR, indices: {NAME: DIR, ...}}`; a ValueError naming the corpus."""
        shape = "{shards: DIR, vocab: DIR, indices: {NAME: DIR, ...}}"
        fields = set(raw) if isinstance(raw, dict) else set()
        if not {"shards", "vocab"} <= fields or fields - {"shards", "vocab", "indices"}:
            raise ValueError(f"corpus {name!r}: expected {shape}, got {raw!r}")
        indices = raw.get("indices") or {}
        dirs = [raw["shards"], raw["vocab"], *(indices.values() if isinstance(indices, dict) else [None])]
        if not all(isinstance(d, str) and d for d in dirs):
            raise ValueError(f"corpus {name!r}: shards, vocab and every index must name a directory ({shape}), "
                             f"got {raw!r}")
        return cls(raw["shards"], raw["vocab"], {str(k): v for k, v in indices.items()})


REGNET, VIT = "regnety_002", "vit_tiny_patch16_224"
HASHTAG_REGNET = "trainer/configs/demo_cpu.yaml"
SWAV_REGNET = "trainer/configs/swav_regnety_demo_cpu.yaml"
HASHTAG_VIT = "trainer/configs/demo_vit_cpu.yaml"
MAE_VIT = "trainer/configs/mae_demo_cpu.yaml"


def demo_arms(mae_share: float = 0.5) -> dict[str, Arm]:
    """The papers' arms: SWAG vs SEER vs none on RegNetY, MAWS vs SWAG vs none on ViT; in the
    MAWS arm MAE gets `mae_share` of the budget, hashtag pretraining from its encoder the rest.
    Hashtag pretraining reads the corpus's importance index, SwAV and MAE every image once."""
    if not 0 < mae_share < 1:
        raise ValueError(f"mae_share must be in (0, 1), got {mae_share}")
    return {
        "hashtag": Arm("regnety", REGNET, (Stage("trainer.pretrain", HASHTAG_REGNET, 1.0, index=IMPORTANCE),)),
        "swav": Arm("regnety", REGNET, (Stage("trainer.swav", SWAV_REGNET, 1.0),)),
        "random": Arm("regnety", REGNET),
        "vit_mae_hashtag": Arm("vit", VIT, (Stage("trainer.mae", MAE_VIT, mae_share),
                                            Stage("trainer.pretrain", HASHTAG_VIT, 1 - mae_share, True,
                                                  index=IMPORTANCE))),
        "vit_hashtag": Arm("vit", VIT, (Stage("trainer.pretrain", HASHTAG_VIT, 1.0, index=IMPORTANCE),)),
        "vit_random": Arm("vit", VIT),
    }


PAPER_CLAIMS = {
    "regnety": Claim("hashtag", "swav", "weak supervision > self-supervision at equal compute (SWAG vs SEER)"),
    "vit": Claim("vit_mae_hashtag", "vit_hashtag", "MAE pre-pretraining improves hashtag pretraining (MAWS)")}
SAMPLING_CORPORA = ("keywords", "captions")  # the openclipart authors' keywords; SVG titles/descriptions


def sampling_arms(mae_share: float = 0.5) -> dict[str, Arm]:
    """MetaCLIP balancing vs SWAG's importance resampling, hashtag pretraining of one RegNetY with
    one config on each corpus: both arms of a corpus have the same step, so the same samples.
    MetaCLIP's arm comes first, so a pair's a - b is MetaCLIP - importance, as its claim reads."""
    return {f"{corpus}_{index}": Arm("regnety", REGNET, (Stage("trainer.pretrain", HASHTAG_REGNET, 1.0,
                                                              index=index),), corpus=corpus)
            for corpus in SAMPLING_CORPORA for index in (METACLIP, IMPORTANCE)}


SAMPLING_CLAIMS = {c: Claim(f"{c}_{METACLIP}", f"{c}_{IMPORTANCE}",
                            f"MetaCLIP balancing vs SWAG importance resampling, {c}", directional=False)
                   for c in SAMPLING_CORPORA}

# arm set -> (its arms as a function of mae_share, its claims by name)
ARM_SETS = {"papers": (demo_arms, PAPER_CLAIMS), "sampling": (sampling_arms, SAMPLING_CLAIMS)}


def arm_set(name: str, mae_share: float = 0.5) -> dict[str, Arm]:
    if name not in ARM_SETS:
        raise ValueError(f"unknown arm set {name!r}; valid: {', '.join(ARM_SETS)}")
    return ARM_SETS[name][0](mae_share)


def claims(name: str) -> dict[str, Claim]:
    if name not in ARM_SETS:
        raise ValueError(f"unknown arm set {name!r}; valid: {', '.join(ARM_SETS)}")
    return ARM_SETS[name][1]


def pairs(arms: dict[str, Arm]) -> list[tuple[str, str]]:
    """Every pair of arms of one family and one corpus, in the registry's order (a before b: each
    family lists its paper's method first, so a - b > 0 is the paper's claim). Arms of different
    corpora are not paired: their label spaces and labelled images differ."""
    names = list(arms)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if (arms[a].family, arms[a].corpus) == (arms[b].family, arms[b].corpus)]


def samples_for(budget_cpu_s: float, share: float, step_cpu_s: float, batch: int) -> int:
    """Training samples a stage gets: whole global batches within share x budget CPU seconds of
    measured step cost (at least one batch)."""
    if budget_cpu_s <= 0 or step_cpu_s <= 0 or batch < 1:
        raise ValueError(f"need budget > 0, step cost > 0, batch >= 1; got {budget_cpu_s}, {step_cpu_s}, {batch}")
    return max(1, int(share * budget_cpu_s / step_cpu_s)) * batch
