"""SEER's label types (Goyal et al. 2022b, indicator 1) for a hashtag vocabulary, through WordNet.

A label has a type when its sense is, or has among its (instance) hypernyms, one of the type's
roots below: `person.n.01` makes a Human label, `animal.n.01` a Non-Human one. A label may have
several types (a `criminal` is Human and Crime) or none.

Its sense (senses="first", the default) is the most frequent of the label's own synsets: the
first of its name's WordNet noun senses (ordered by SemCor frequency) that the vocabulary kept
for it. The union over all its synsets types polysemous words by their rarest meaning (toy by
toy_dog.n.01, stock by livestock.n.01, flag by iris.n.01), and the name's most frequent sense
in all of WordNet ignores what the vocabulary admits (printer, monitor, server and router are
people first). A label whose name has no sense among its synsets falls back to their union;
senses="all" takes the union for every label (the broadest reading).

A human is an animal in WordNet (homo.n.02, the sense a six-lexname vocabulary keeps for `man`
and `human`, is under animal.n.01): Human takes precedence, so such a label is Human, not
Non-Human. Non-Human and Crime are the harmful
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
from typing import NamedTuple

TYPES = ("Human", "Possibly-Human", "Non-Human", "Crime")
SENSES = ("first", "all")
HARMFUL = ("Non-Human", "Crime")
TYPE_ROOTS = {
    "Human": ("person.n.01", "people.n.01", "homo.n.02"),
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


def label_sense(name: str, synsets: list[str], wn, senses: str = "first") -> list[str]:
    """The synsets a label is typed by: the first of its name's noun senses among its synsets
    ("first"), or all its synsets ("all", and where none of the name's senses is among them)."""
    if senses not in SENSES:
        raise ValueError(f"unknown senses={senses!r}; valid: {', '.join(SENSES)}")
    own = set(synsets)
    first = [s.name() for s in wn.synsets(name.replace(" ", "_"), "n") if s.name() in own][:1] \
        if senses == "first" else []
    return first or list(synsets)


class Typed(NamedTuple):
    types: set[str]   # the label's types (none, one or several)
    why: list[str]    # "type <- root" for each root above its sense, for the audit
    sense: list[str]  # the synsets it was typed by


def label_types(names: list[str], label_synsets: list[list[str]], wn, roots: dict = TYPE_ROOTS,
                senses: str = "first") -> list[Typed]:
    """Per label: its types, the roots that gave them and the sense they came through."""
    out = []
    for name, syns in zip(names, label_synsets, strict=True):
        chosen = label_sense(name, syns, wn, senses)
        above = set().union(*(hypernym_closure(s, wn) for s in chosen)) if chosen else set()
        why = [f"{t} <- {r}" for t in TYPES for r in roots.get(t, ()) if r in above]
        types = {w.split(" <- ")[0] for w in why}
        if "Human" in types and "Non-Human" in types:  # a human is an animal in WordNet: not harmful
            types.discard("Non-Human")
            why = [w if not w.startswith("Non-Human") else f"{w} (Human takes precedence)" for w in why]
        out.append(Typed(types, why, chosen))
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


def type_table(names: list[str], typed: list[Typed], overrides: dict | None = None) -> str:
    """Markdown: every label that has a type, the sense it was typed by and why, for a person to check."""
    overrides = overrides or {}
    rows = ["| label | typed by | types | why |", "| --- | --- | --- | --- |"]
    for n, t in zip(names, typed):
        if n in overrides:
            rows.append(f"| {n} | {', '.join(t.sense)} | {', '.join(sorted(overrides[n])) or '-'} | override file |")
        elif t.types:
            rows.append(f"| {n} | {', '.join(t.sense)} | {', '.join(x for x in TYPES if x in t.types)} | "
                        f"{'; '.join(t.why)} |")
    return "\n".join(rows)
