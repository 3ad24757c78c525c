"""Zero-shot transfer by WordNet (SWAG appendix): downstream classes -> hashtags, and how hashtag
scores become class scores. Pure functions; WordNet is passed in.

Each class is one or more WordNet synsets: from a wnid list (e.g. ImageNet-1k's, which timm ships),
from a class name that is a synset name or wnid, from an override file, or else the first noun
synset of the folder name (WordNet's morphy). Each class maps to every hashtag whose synsets reach
the highest path similarity to the class's synsets (ties kept: many-to-many; one hashtag may serve
several classes, e.g. `crane` -> the bird and the machine).

Aggregation of hashtag probabilities p[h] into class scores (AGGREGATIONS):
- "average" (SWAG's RegNetY rule): score(c) = mean of p[h] over the hashtags mapped to c.
- "split_max" (SWAG's ViT rule): a hashtag mapped to N classes gives each p[h] / N; score(c) is the
  max over its hashtags.
"""
from __future__ import annotations

import functools
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_WNID = re.compile(r"^n\d{8}$")
_SYNSET_NAME = re.compile(r"^.+\.[nvasr]\.\d{2}$")


@dataclass(frozen=True)
class ClassMapping:
    name: str
    synsets: tuple[str, ...]
    source: str                   # "wnid", "synset name", "override" or "morphy"
    hashtags: tuple[int, ...]     # indices into the hashtag list
    similarity: float             # the best path similarity, shared by every mapped hashtag


def read_overrides(path: str | Path) -> dict[str, list[str]]:
    """YAML `class name: [synset, ...]` (a single string is allowed)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of class name -> synset list")
    return {str(k): [v] if isinstance(v, str) else list(v) for k, v in data.items()}


def read_wnids(path: str | Path) -> list[str]:
    lines = [x.strip() for x in Path(path).read_text().splitlines() if x.strip()]
    bad = [x for x in lines if not _WNID.match(x)]
    if bad:
        raise ValueError(f"{path}: not WordNet ids (nXXXXXXXX): {bad[:5]}")
    return lines


def class_synsets(names: list[str], wn,
                  overrides: dict[str, list[str]] | None = None) -> list[tuple[tuple[str, ...], str]]:
    """(synset names, source) per class name; unresolvable names raise one error listing them all."""
    overrides = overrides or {}
    out, bad = [], []
    for name in names:
        try:
            if name in overrides:
                entries = overrides[name]
                entries = [entries] if isinstance(entries, str) else entries
                out.append((tuple(_synset(s, wn) for s in entries), "override"))
            elif _WNID.match(name):
                out.append(((_synset(name, wn),), "wnid"))
            elif _SYNSET_NAME.match(name):
                out.append(((_synset(name, wn),), "synset name"))
            else:
                lemma = wn.morphy(name.lower().replace(" ", "_").replace("-", "_"), "n")
                found = wn.synsets(lemma, "n") if lemma else []
                if not found:
                    raise ValueError(name)
                out.append(((found[0].name(),), "morphy"))
        except (ValueError, LookupError) as e:
            bad.append(f"{name} ({e})")
    if bad:
        raise ValueError(f"classes with no WordNet synset: {', '.join(bad)}; add them to an override file "
                         "(class name: [synset.n.01, ...])")
    return out


def _synset(entry: str, wn) -> str:
    try:
        if _WNID.match(entry):
            return wn.synset_from_pos_and_offset("n", int(entry[1:])).name()
        return wn.synset(entry).name()
    except Exception:  # nltk raises WordNetError / ValueError / KeyError for unknown ids
        raise ValueError(f"unknown synset {entry!r}") from None


def _hypernym_depths(name: str, wn) -> dict[str, int]:
    """Shortest distance from synset `name` to each of its (instance) hypernyms, itself at 0."""
    depths = {name: 0}
    queue = deque([wn.synset(name)])
    while queue:
        s = queue.popleft()
        for h in s.hypernyms() + s.instance_hypernyms():
            if h.name() not in depths:
                depths[h.name()] = depths[s.name()] + 1
                queue.append(h)
    return depths


def path_similarity(a: str, b: str, depths) -> float:
    """1 / (1 + shortest path through a common hypernym); 0 when there is none (as NLTK's for nouns)."""
    da, db = depths(a), depths(b)
    common = da.keys() & db.keys()
    return 1.0 / (1 + min(da[c] + db[c] for c in common)) if common else 0.0


def map_classes(names: list[str], synsets: list[tuple[tuple[str, ...], str]], hashtag_synsets: list[list[str]],
                wn) -> list[ClassMapping]:
    """Every class to the hashtag(s) of highest path similarity (max over synset pairs)."""
    depths = functools.lru_cache(maxsize=None)(lambda s: _hypernym_depths(s, wn))
    out = []
    for name, (syns, source) in zip(names, synsets):
        sims = [max((path_similarity(c, h, depths) for c in syns for h in hs), default=0.0) for hs in hashtag_synsets]
        best = max(sims, default=0.0)
        tags = tuple(i for i, s in enumerate(sims) if s == best and best > 0)
        out.append(ClassMapping(name, syns, source, tags, best))
    return out


def _average(probs: np.ndarray, mapping: list[ClassMapping]) -> np.ndarray:
    return np.stack([probs[:, list(m.hashtags)].mean(1) if m.hashtags else np.zeros(len(probs))
                     for m in mapping], 1)


def _split_max(probs: np.ndarray, mapping: list[ClassMapping]) -> np.ndarray:
    n = np.zeros(probs.shape[1])
    for m in mapping:
        n[list(m.hashtags)] += 1
    return np.stack([(probs[:, list(m.hashtags)] / n[list(m.hashtags)]).max(1) if m.hashtags
                     else np.zeros(len(probs)) for m in mapping], 1)


AGGREGATIONS = {"average": _average, "split_max": _split_max}


def aggregate(probs: np.ndarray, mapping: list[ClassMapping], rule: str) -> np.ndarray:
    """[N, H] hashtag probabilities -> [N, C] class scores by AGGREGATIONS[rule]."""
    if rule not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {rule!r}; valid: {', '.join(AGGREGATIONS)}")
    return AGGREGATIONS[rule](np.asarray(probs, dtype=np.float64), mapping)


def mapping_table(mapping: list[ClassMapping], hashtag_names: list[str], hashtag_synsets: list[list[str]]) -> str:
    """A TSV a person can audit: class, its synsets and source, similarity, the mapped hashtags."""
    rows = ["class\tclass_synsets\tsource\tsimilarity\thashtags\thashtag_synsets"]
    for m in mapping:
        rows.append("\t".join([m.name, ",".join(m.synsets), m.source, f"{m.similarity:.4f}",
                               ",".join(hashtag_names[i] for i in m.hashtags),
                               ";".join(",".join(hashtag_synsets[i]) for i in m.hashtags)]))
    return "\n".join(rows) + "\n"
