"""What the analyses need from a model, for every image of an ImageTable: trunk embeddings
(cached as the transfer protocols' features are, transfer/features.py) and hashtag probabilities
(the export's head on them: softmax, or sigmoid for a model trained with loss=bce)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.export import LoadedModel, load_model
from transfer.downstream import Split
from transfer.features import cached_features
from transfer.groups.config import GroupConfig
from transfer.groups.data import Groups, ImageTable, group_index, group_values, read_images
from transfer.protocol import device_of


def as_split(table: ImageTable) -> Split:
    """The table's images as a one-class Split, the unit the feature extractor and cache read."""
    root = Path(table.sources[0]).parent if table.sources else Path(".")
    return Split(root, "groups", ("image",), tuple(table.sources), (0,) * len(table), 0)


def embeddings(cfg: GroupConfig, table: ImageTable) -> tuple[LoadedModel, np.ndarray]:
    """(the model, trunk features [N, D] in table order)."""
    model = load_model(cfg.model, cfg.img_size, cfg.seed)
    cache = cfg.cache_dir or str(Path(cfg.out).parent / "features")
    x, _ = cached_features(model, as_split(table), cfg.img_size, cache, cfg.batch_size, cfg.workers, device_of(cfg))
    return model, x.numpy()


def check_hashtag_model(spec: str) -> None:
    from trainer.export import read_export_meta
    from trainer.lit.export import is_lit_export

    if spec.startswith("random:"):
        raise ValueError(f"model={spec}: this analysis needs an exported hashtag model (its head), not random init")
    if is_lit_export(spec):
        raise ValueError(f"model={spec} is a LiT export; this analysis reads a hashtag model's head")
    if read_export_meta(spec).get("head") == "swav":
        raise ValueError(f"model={spec}: a SwAV export's head scores prototypes, not hashtags")


def hashtag_probs(cfg: GroupConfig, table: ImageTable) -> tuple[LoadedModel, np.ndarray]:
    """(the model, hashtag probabilities [N, H] in table order)."""
    check_hashtag_model(cfg.model)
    model, x = embeddings(cfg, table)
    with torch.no_grad():
        logits = model.head.eval()(torch.from_numpy(x).float())
    loss = model.meta.get("config", {}).get("loss", "softmax")
    probs = torch.sigmoid(logits) if loss == "bce" else torch.softmax(logits, 1)
    return model, probs.double().numpy()


@dataclass(frozen=True)
class GroupedProbs:
    table: ImageTable
    groups: Groups
    keep: np.ndarray    # [N] bool: the image is in a kept group
    model: LoadedModel
    probs: np.ndarray   # [N, H] hashtag probabilities, every image of the table

    def result_head(self, cfg: GroupConfig, analysis: str) -> dict:
        """The result's first keys: what was analysed, its groups and what was left out."""
        g = self.groups
        return {"analysis": analysis, "model": cfg.model, "data": cfg.data, "group": cfg.group,
                "groups": [{"name": n, "images": s} for n, s in zip(g.names, g.sizes)],
                "excluded": g.excluded, "skipped": self.table.skipped, "images": int(self.keep.sum()), "k": cfg.k}


def grouped_hashtag_probs(cfg: GroupConfig, group: str) -> GroupedProbs:
    """The image set of cfg.data, its groups by `group` (small groups excluded) and the hashtag
    model's probabilities for every image: what associations and harmful start from."""
    table = read_images(cfg.data, cfg.layout)
    grp = group_index(group_values(table, group), cfg.min_group_size)
    model, probs = hashtag_probs(cfg, table)
    return GroupedProbs(table, grp, grp.ids >= 0, model, probs)
