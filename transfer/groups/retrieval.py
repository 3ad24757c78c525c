r"""Disparity in learned representations (SEER, Goyal et al. 2022b indicator 3): do a trunk's
nearest neighbours share the query's attribute equally often for every group?

    python -m transfer.groups retrieval model=EXPORT data=QUERY_DIR database=DB_DIR layout=utkface \
        attribute=race out=R.json [group=race] [ks=[1,5,10,50]]

Trunk embeddings of the query and database images (the cached features of transfer/features.py),
L2-normalised; each query's K nearest database images by cosine similarity; Precision@K is the
share of them whose `attribute` equals the query's. Per group of queries (`group`, default the
attribute itself): the mean Precision@K for K in ks, with a 95% bootstrap interval over queries,
and its difference from the other groups' mean. Without `database`, the query set is searched
against itself, a query never being its own neighbour. Any model works, random init included.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.cli import key
from transfer.groups import ci, metrics
from transfer.groups.config import GroupConfig, analysis_main
from transfer.groups.data import group_index, group_values, read_images
from transfer.groups.report import EXACT_NOTE, bars, pct_ci, points_ci, write


@dataclass(frozen=True, kw_only=True)  # its required keys follow the shared defaults
class RetrievalConfig(GroupConfig):
    attribute: str = key(help="the column a neighbour should share with its query (gender, race, ...)")
    group: str | None = key(None, "the column grouping the queries; null: the attribute")
    database: str | None = key(None, "the database image set (same layout); null: the query set itself")
    ks: tuple[int, ...] = key((1, 5, 10, 50), "neighbours K of Precision@K")

    def __post_init__(self):
        super().__post_init__()
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive integers, got {list(self.ks)}")


def precision_by_group(query, database, query_attr, db_attr, groups, num_groups: int, ks, exclude_self: bool,
                       n_boot: int = 1000, seed: int = 0) -> dict:
    """{"precision": [G][len(ks)] figures, "diff": the same, minus the other groups' mean}."""
    ks = list(ks)
    nn = metrics.neighbours(query, database, max(ks), exclude_self)
    p = metrics.precision_at_k(nn, query_attr, db_attr, ks)
    reps = ci.replicate_weights(groups, num_groups, n_boot=n_boot, seed=seed)
    precision, diff = ci.rates_and_differences(metrics.group_means(p, groups, num_groups), ci.group_means(p, reps), reps)
    return {"precision": precision, "diff": diff}


def run(cfg: RetrievalConfig) -> dict:
    from transfer.groups.scores import embeddings

    queries = read_images(cfg.data, cfg.layout)
    grp = group_index(group_values(queries, cfg.group or cfg.attribute), cfg.min_group_size)
    q_attr = group_values(queries, cfg.attribute)
    keep = (grp.ids >= 0) & np.array([a is not None for a in q_attr])
    model, q = embeddings(cfg, queries)
    if cfg.database is None:
        db, d_attr, d, exclude_self = queries, q_attr, q, True
        q, d = q[keep], d[keep]  # the database is the kept queries
        d_attr = [a for a, k in zip(d_attr, keep) if k]
    else:
        db = read_images(cfg.database, cfg.layout)
        d_attr = group_values(db, cfg.attribute)
        _, d = embeddings(replace(cfg, data=cfg.database), db)
        has = np.array([a is not None for a in d_attr])
        d, d_attr, exclude_self, q = d[has], [a for a, h in zip(d_attr, has) if h], False, q[keep]
    qa = np.array([a for a, k in zip(q_attr, keep) if k], dtype=object)
    r = precision_by_group(q, d, qa, np.array(d_attr, dtype=object), grp.ids[keep], len(grp.names), cfg.ks,
                           exclude_self, cfg.n_boot, cfg.seed)
    result = {"analysis": "retrieval", "model": cfg.model, "arch": model.name, "data": cfg.data,
              "database": cfg.database, "attribute": cfg.attribute, "group": cfg.group or cfg.attribute,
              "groups": [{"name": n, "images": s} for n, s in zip(grp.names, grp.sizes)],
              "excluded": grp.excluded, "skipped": table_skips(queries, db), "queries": int(keep.sum()),
              "database_images": len(d), "ks": list(cfg.ks), **r}
    figures = {f"precision_at_{k}": bars(grp.names, [row[j] for row in r["precision"]],
                                         f"Precision@{k} of {cfg.attribute} by {result['group']}", f"Precision@{k}")
               for j, k in enumerate(cfg.ks)}
    md = markdown(cfg, result)
    result = write(cfg, result, md, figures)
    print(md)
    return result


def table_skips(queries, db) -> dict:
    return {"queries": queries.skipped, "database": db.skipped} if db is not queries else queries.skipped


def markdown(cfg: RetrievalConfig, r: dict) -> str:
    lines = [f"## Precision@K of {cfg.attribute} by {r['group']}: {cfg.model}", "",
             f"{r['queries']} queries against {r['database_images']} database images (cosine, L2-normalised trunk "
             f"embeddings); 95% bootstrap intervals over queries. Excluded: {r['excluded']['missing value']} images "
             f"without a value, small groups {r['excluded']['small groups'] or 'none'}. {EXACT_NOTE}", "",
             "| group | queries | " + " | ".join(f"P@{k}" for k in cfg.ks) + f" | P@{cfg.ks[0]} - others' mean |",
             "| --- | --- | " + " | ".join("---" for _ in cfg.ks) + " | --- |"]
    for g, row, d in zip(r["groups"], r["precision"], r["diff"]):
        lines.append(f"| {g['name']} | {g['images']} | " + " | ".join(pct_ci(f) for f in row) + f" | {points_ci(d[0])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    return analysis_main(RetrievalConfig, run, argv, "retrieval", __doc__)


if __name__ == "__main__":
    main()
