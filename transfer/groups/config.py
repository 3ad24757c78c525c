"""The keys every per-group analysis shares (model, image set, groups, bootstrap); each analysis's
config adds its own."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.cli import key, load_config
from transfer.groups.data import LAYOUTS
from transfer.protocol import check_out


@dataclass(frozen=True)
class GroupConfig:
    model: str = key(help="export directory (a hashtag model; retrieval also takes random:<timm name>)")
    data: str = key(help="the image set: a folder, a table file, or a data set's root (see layout)")
    out: str = key(help="result JSON; the Markdown summary (.md) and figures (.<name>.png) go next to it")
    layout: str = key("folder", "folder | utkface | dollar_street | casual_conversations | miap | table (transfer/groups/data.py)")
    min_group_size: int = key(1, "groups with fewer images (households for per-household figures) are "
                                 "excluded and reported")
    n_boot: int = key(1000, "bootstrap replicates of every 95% interval")
    vocab: str | None = key(None, "vocab dir of the model's hashtags; null: the export's")
    img_size: int = key(224, "input side in pixels")
    batch_size: int = key(64, "feature extraction batch")
    workers: int = key(0, "data loader worker processes")
    seed: int = key(0, "the bootstrap's seed (and random init's, for model=random:...)")
    device: str = key("auto", "auto | cuda | cpu")
    cache_dir: str | None = key(None, "feature cache; null: <out's directory>/features")

    def __post_init__(self):
        check_out(self.out)
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        if self.min_group_size < 1:
            raise ValueError(f"min_group_size must be >= 1, got {self.min_group_size}")
        if self.n_boot < 2:
            raise ValueError(f"n_boot must be >= 2, got {self.n_boot}")
        if self.img_size < 8:
            raise ValueError(f"img_size must be >= 8, got {self.img_size}")


def analysis_main(cls, run, argv: list[str] | None, analysis: str, doc: str) -> dict:
    """An analysis's command line: its config from key=value arguments (`--help`: its keys), run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(load_config(cls, argv, f"transfer.groups {analysis}", doc))
