"""Zero-shot by class names through a LiT text tower (trainer.lit; MAWS's zero-shot protocol).

Each class name goes into every prompt template; the prompts' unit text embeddings are averaged
and renormalised into the class embedding (CLIP's prompt ensembling), and an image's score for a
class is the cosine of its locked-tower embedding with it. Image features are the transfer
protocols' cached features of the export's image tower (transfer/features.py), the tower the
text tower was trained against, at the resolution it was trained at.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

# LiT/CLIP-style templates, worded for clip art as well as photographs
DEFAULT_TEMPLATES = ("a clip art of a {}.", "a drawing of a {}.", "an illustration of a {}.", "a picture of a {}.",
                     "a {}.", "{}")


def class_names(classes: list[str], overrides_file: str | None) -> dict[str, list[str]]:
    """Class -> the names it is prompted with: a YAML override's (`class: name` or `class: [name, ...]`),
    else the folder name with '_' and '-' as spaces."""
    over = {}
    if overrides_file:
        import yaml

        data = yaml.safe_load(Path(overrides_file).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{overrides_file}: expected a mapping of class name -> name or list of names")
        unknown = sorted(set(map(str, data)) - set(classes))
        if unknown:
            raise ValueError(f"{overrides_file}: classes {unknown} are not in the dataset ({', '.join(classes)})")
        over = {str(k): [v] if isinstance(v, str) else [str(x) for x in v] for k, v in data.items()}
    return {c: over.get(c) or [c.replace("_", " ").replace("-", " ")] for c in classes}


def prompts(names: list[str], templates: tuple[str, ...]) -> list[str]:
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise ValueError(f"each template needs exactly one '{{}}' for the class name; got {bad or 'none'}")
    return [t.format(n) for n in names for t in templates]


def class_embeddings(embed, names: dict[str, list[str]], templates: tuple[str, ...]) -> torch.Tensor:
    """[C, D] unit class embeddings: the mean of each class's prompt embeddings, renormalised.
    `embed(list of texts)` gives unit text embeddings."""
    rows = []
    for c in names:
        e = embed(prompts(names[c], templates))
        rows.append(F.normalize(e.mean(0), dim=0))
    return torch.stack(rows)


def lit_scores(cfg, read_features) -> tuple[torch.Tensor, torch.Tensor, list[str], dict, dict]:
    """(scores [N, C], labels, classes, names, the LiT export's meta) on cfg.split.
    read_features(cfg) -> (model, features) is transfer.protocol.features."""
    from trainer.lit.export import IMAGE, load_lit

    lit = load_lit(cfg.model)
    trained_at = int(lit.meta["img_size"])
    if cfg.img_size != trained_at:
        raise ValueError(f"img_size={cfg.img_size}, but the text tower of {cfg.model} was trained on image embeddings "
                         f"at {trained_at}: pass img_size={trained_at}")
    _, f = read_features(dataclasses.replace(cfg, model=str(Path(cfg.model) / IMAGE)))
    classes = list(f["classes"])
    names = class_names(classes, cfg.class_names)
    xva, yva = f[cfg.split]
    with torch.no_grad():
        text = class_embeddings(lit.embed_texts, names, tuple(cfg.templates))
        scores = F.normalize(xva.float(), dim=1) @ text.t()
    return scores, yva, classes, names, lit.meta
