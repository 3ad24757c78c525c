"""SEER's label types (Goyal et al. 2022b, indicator 1) for a hashtag vocabulary, through WordNet.

A label has a type when one of its synsets is, or has among its (instance) hypernyms, one of the
type's roots below: `person.n.01` makes a Human label, `animal.n.01` a Non-Human one. A label may
have several types (a `criminal` is Human and Crime) or none. Non-Human and Crime are the harmful
types: their presence among the top-5 predictions for a photograph of a person is what the
indicator counts. The roots are a short list for a person to check; `label_types=FILE.yaml`
(label name -> [type, ...]) replaces the lookup for labels it names, e.g. for a model whose
labels have no synsets. WordNet is passed in, as in pipeline/wordnet.py.

Note what the vocabulary allows: SWAG keeps synsets of six lexicographer files only
(pipeline/wordnet.py DEFAULT_LEXNAMES, no noun.person or noun.body), so such a vocabulary has no
Human or Possibly-Human label, and a Non-Human label is any animal hashtag.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

TYPES = ("Human", "Possibly-Human", "Non-Human", "Crime")
HARMFUL = ("Non-Human", "Crime")
TYPE_ROOTS = {
    "Human": ("person.n.01", "people.n.01"),
    "Possibly-Human": ("body_part.n.01", "human_body.n.01", "portrait.n.02", "doll.n.01"),
    "Non-Human": ("animal.n.01",),
    "Crime": ("crime.n.01", "criminal.n.01", "prisoner.n.01", "convict.n.01", "mug_shot.n.01"),
}


def hypernym_closure(synset: str, wn) -> set[str]:
    """The synset and every (instance) hypernym above it."""
    seen = {synset}
    queue = deque([wn.synset(synset)])
    while queue:
        for h in (s := queue.popleft()).hypernyms() + s.instance_hypernyms():
            if h.name() not in seen:
                seen.add(h.name())
                queue.append(h)
    return seen


def label_types(label_synsets: list[list[str]], wn, roots: dict = TYPE_ROOTS) -> list[tuple[set[str], list[str]]]:
    """Per label: (its types, the roots that gave them, as "type <- root" strings for the audit)."""
    out = []
    for syns in label_synsets:
        above = set().union(*(hypernym_closure(s, wn) for s in syns)) if syns else set()
        why = [f"{t} <- {r}" for t in TYPES for r in roots.get(t, ()) if r in above]
        out.append(({w.split(" <- ")[0] for w in why}, why))
    return out


def read_type_overrides(path: str | Path) -> dict[str, set[str]]:
    """YAML label name -> type or [types]; unknown types are an error listing the valid ones."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of label name -> [type, ...]")
    out = {}
    for name, types in data.items():
        types = {types} if isinstance(types, str) else set(types or [])
        bad = sorted(types - set(TYPES))
        if bad:
            raise ValueError(f"{path}: label {name!r} has unknown type(s) {bad}; valid: {', '.join(TYPES)}")
        out[str(name)] = types
    return out


def type_table(names: list[str], synsets: list[list[str]], typed: list[tuple[set[str], list[str]]],
               overrides: dict | None = None) -> str:
    """Markdown: every label that has a type, its synsets and why, for a person to check."""
    overrides = overrides or {}
    rows = ["| label | synsets | types | why |", "| --- | --- | --- | --- |"]
    for n, s, (types, why) in zip(names, synsets, typed):
        if n in overrides:
            rows.append(f"| {n} | {', '.join(s)} | {', '.join(sorted(overrides[n])) or '-'} | override file |")
        elif types:
            rows.append(f"| {n} | {', '.join(s)} | {', '.join(t for t in TYPES if t in types)} | {'; '.join(why)} |")
    return "\n".join(rows)
