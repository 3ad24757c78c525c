r"""Geographic disparity (SWAG appendix F.1; SEER, Goyal et al. 2022b indicator 2) of a hashtag
model's zero-shot classification on images of households around the world.

    python -m transfer.groups geo model=EXPORT data=dollarstreet/ layout=dollar_street out=R.json \
        [class_synsets=FILE.yaml | mapping=FILE.yaml] [aggregation=average]

Classes are the images' labels (Dollar Street's topics). Each maps to hashtags through WordNet
(pipeline/zero_shot_map.py, the zero-shot route; `class_synsets=` overrides a class's synsets) or
by a given `mapping=` file (class -> [hashtag, ...]); only mapped classes are predicted, and a class
with no synset or hashtag is reported and left out with the images that have no other label. An
image with several labels is correct when its predicted class is any of them.

SWAG: top-1 accuracy per country (table and bar chart), each country's difference from the
others' mean, and the 80% rule heat map: for each pair of countries (row r, column c), the
percentage of their shared classes whose accuracy in r is below 0.8 times that in c (each label
of an image counts toward its class). SEER: top-5 hit rate, computed per household then averaged
over the households of each region and each income bucket (round(ln(income) / 3): low / medium /
high). Intervals: 95% bootstrap over images (SWAG's figures) or over households (SEER's).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cli import key
from pipeline.zero_shot_map import AGGREGATIONS, ClassMapping
from transfer.groups import ci, metrics
from transfer.groups.config import GroupConfig, analysis_main
from transfer.groups.data import group_index, group_values, read_images
from transfer.groups.report import EXACT_NOTE, bars, heatmap, pct_ci, points_ci, write


@dataclass(frozen=True, kw_only=True)  # its required keys follow the shared defaults
class GeoConfig(GroupConfig):
    layout: str = key("dollar_street", "folder | utkface | dollar_street | table (transfer/groups/data.py)")
    country: str = key("country", "the country column (SWAG's per-country figures)")
    groups: tuple[str, ...] = key(("region", "income_bucket"), "columns of SEER's per-household figures")
    household: str | None = key("household", "the household column; null: every image its own household")
    class_synsets: str | None = key(None, "YAML overrides: class name -> [synset, ...]")
    mapping: str | None = key(None, "YAML class -> [hashtag, ...] used instead of WordNet")
    aggregation: str = key("average", "average (SWAG RegNetY) | split_max (SWAG ViT)")
    k: int = key(5, "SEER's hit rate: an image is a hit when one of its labels is among the top k")
    rule: float = key(0.8, "the disparity rule: row accuracy below rule x column accuracy")

    def __post_init__(self):
        super().__post_init__()
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if self.class_synsets and self.mapping:
            raise ValueError("class_synsets and mapping are two routes to the hashtags: give one")


def country_figures(correct, label_rows, countries, num_countries: int, num_classes: int,
                    n_boot: int = 1000, seed: int = 0, rule: float = 0.8) -> dict:
    """SWAG's figures from per-image correctness [N], each image's class indices and country ids.
    Keys: accuracy and diff ([G] figures), matrix ([G][G] percent), matrix_ci95 ([2][G][G]),
    shared_classes ([G][G])."""
    correct, countries = np.asarray(correct, dtype=np.float64), np.asarray(countries)
    reps = ci.replicate_weights(countries, num_countries, n_boot=n_boot, seed=seed)
    accuracy, diff = ci.rates_and_differences(metrics.group_means(correct, countries, num_countries),
                                              ci.group_means(correct, reps), reps)
    # (image, label) pairs: every label of an image counts toward its class
    pair_img = np.array([i for i, ls in enumerate(label_rows) for _ in ls], dtype=np.int64)
    pair_cls = np.array([c for ls in label_rows for c in ls], dtype=np.int64)
    cls_acc = metrics.class_group_accuracy(correct[pair_img], pair_cls, countries[pair_img], num_classes, num_countries)
    matrix, shared = metrics.eighty_percent_matrix(cls_acc, rule)
    # a pair's bootstrap weight is its image's: the image's column among its country's rows
    col = np.zeros(len(correct), dtype=np.int64)
    for r in reps.rows:
        col[r] = np.arange(len(r))
    pair_rows = tuple(np.flatnonzero(countries[pair_img] == g) for g in range(num_countries))
    pair_reps = ci.Replicates(pair_rows, tuple(None if w is None else w[:, col[pair_img[p]]]
                                               for p, w in zip(pair_rows, reps.weights)), reps.n_boot)
    boot_cls = ci.class_accuracy(correct[pair_img], pair_cls, num_classes, pair_reps)
    boot_matrix = np.stack([metrics.eighty_percent_matrix(b, rule)[0] for b in boot_cls])
    return {"accuracy": accuracy, "diff": diff,
            "matrix": ci.plain(matrix), "matrix_ci95": ci.plain(ci.interval(boot_matrix)),
            "shared_classes": shared.tolist()}


def household_figures(hits, households, groups, num_groups: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """SEER's figures: per group, the mean over its households of each household's hit rate, with
    intervals over households, and each group's difference from the others' mean."""
    reps = ci.replicate_weights(groups, num_groups, clusters=households, n_boot=n_boot, seed=seed)
    rate, diff = ci.rates_and_differences(metrics.group_means(hits, groups, num_groups, clusters=households),
                                          ci.group_means(hits, reps), reps)
    return {"rate": rate, "diff": diff}


def class_mapping(cfg: GeoConfig, classes: list[str], names: list[str], synsets: list[list[str]]) -> list[ClassMapping]:
    """Every class's hashtags: from cfg.mapping, or WordNet; a class that resolves to nothing maps
    to no hashtag (left out and reported), where transfer.zero_shot would stop."""
    if cfg.mapping:
        import yaml

        given = yaml.safe_load(Path(cfg.mapping).read_text()) or {}
        given = {str(c): [v] if isinstance(v, str) else list(v or []) for c, v in given.items()}
        bad = sorted({h for v in given.values() for h in v} - set(names))
        if bad:
            raise ValueError(f"mapping={cfg.mapping} names hashtags the model lacks: {bad[:10]}")
        return [ClassMapping(c, (), "mapping file", tuple(names.index(h) for h in given.get(c, [])),
                             1.0 if given.get(c) else 0.0) for c in classes]
    from pipeline.wordnet import load_wordnet
    from pipeline.zero_shot_map import class_synsets, map_classes, read_overrides

    wn = load_wordnet()
    overrides = read_overrides(cfg.class_synsets) if cfg.class_synsets else None
    resolved = {}
    for c in classes:
        try:
            resolved[c] = class_synsets([c], wn, overrides)[0]
        except ValueError:
            pass  # no synset: no hashtag
    found = dict(zip(resolved, map_classes(list(resolved), list(resolved.values()), synsets, wn)))
    return [found.get(c, ClassMapping(c, (), "unresolved", (), 0.0)) for c in classes]


def run(cfg: GeoConfig) -> dict:
    from pipeline.zero_shot_map import aggregate
    from transfer.groups.scores import hashtag_probs
    from transfer.zero_shot import hashtag_table

    table = read_images(cfg.data, cfg.layout)
    labels = table.labels()
    classes = sorted({c for ls in labels for c in ls})
    model, probs = hashtag_probs(cfg, table)
    names, synsets = hashtag_table(cfg, model.meta)
    mapping = class_mapping(cfg, classes, names, synsets)
    mapped = [m for m in mapping if m.hashtags]
    if not mapped:
        raise ValueError(f"none of the {len(classes)} classes maps to a hashtag of {cfg.model}")
    index = {m.name: i for i, m in enumerate(mapped)}
    label_rows = [[index[c] for c in ls if c in index] for ls in labels]
    has_label = np.array([bool(r) for r in label_rows])
    scores = aggregate(probs, mapped, cfg.aggregation)
    pred = metrics.top_k(scores, cfg.k)
    top1 = metrics.hits_any(pred[:, :1], label_rows)
    hits = metrics.hits_any(pred, label_rows)
    country = group_index(group_values(table, cfg.country), cfg.min_group_size)
    keep = (country.ids >= 0) & has_label
    swag = country_figures(top1[keep], [r for r, k in zip(label_rows, keep) if k], country.ids[keep],
                           len(country.names), len(mapped), cfg.n_boot, cfg.seed, cfg.rule)
    homes = group_values(table, cfg.household) if cfg.household else [str(i) for i in range(len(table))]
    seer = {}
    for col in cfg.groups:
        grp = group_index(group_values(table, col), cfg.min_group_size, units=homes)
        has_home = np.array([h is not None for h in homes])
        k = (grp.ids >= 0) & has_label & has_home
        seer[col] = {"groups": [{"name": n, "images": s} for n, s in zip(grp.names, grp.sizes)],
                     "excluded": {**grp.excluded, "no household": int((~has_home).sum())},
                     **household_figures(hits[k], np.array(homes, dtype=object)[k], grp.ids[k], len(grp.names),
                                         cfg.n_boot, cfg.seed)}
    result = {"analysis": "geo", "model": cfg.model, "data": cfg.data, "images": len(table),
              "skipped": table.skipped, "images_without_mapped_label": int((~has_label).sum()),
              "classes": [m.name for m in mapped], "unmapped_classes": [m.name for m in mapping if not m.hashtags],
              "mapping": {m.name: [names[i] for i in m.hashtags] for m in mapped},
              "countries": [{"name": n, "images": s} for n, s in zip(country.names, country.sizes)],
              "country_excluded": country.excluded, "swag": swag, "seer": seer}
    figures = {"accuracy_by_country": bars(country.names, swag["accuracy"], "zero-shot top-1 accuracy by country",
                                           "top-1 accuracy"),
               "rule_matrix": heatmap(np.array(swag["matrix"], dtype=float), country.names,
                                      f"% of classes with row accuracy < {cfg.rule} x column accuracy", "% of classes")}
    for col, s in seer.items():
        figures[f"top{cfg.k}_by_{col}"] = bars([g["name"] for g in s["groups"]], s["rate"],
                                               f"top-{cfg.k} hit rate per household, by {col}", "hit rate")
    md = markdown(cfg, result)
    result = write(cfg, result, md, figures)
    print(md)
    return result


def markdown(cfg: GeoConfig, r: dict) -> str:
    s = r["swag"]
    lines = [f"## Geographic disparity: {cfg.model}", "",
             f"{r['images']} images, {len(r['classes'])} mapped classes ({len(r['unmapped_classes'])} unmapped: "
             f"{', '.join(r['unmapped_classes'][:20]) or 'none'}); {r['images_without_mapped_label']} images without a "
             f"mapped label left out. 95% bootstrap intervals over images (countries) and households (SEER). {EXACT_NOTE}", "",
             "### Top-1 accuracy by country (SWAG F.1)", "", "| country | images | accuracy | - others' mean |",
             "| --- | --- | --- | --- |"]
    for c, a, d in zip(r["countries"], s["accuracy"], s["diff"]):
        lines.append(f"| {c['name']} | {c['images']} | {pct_ci(a)} | {points_ci(d)} |")
    names = [c["name"] for c in r["countries"]]
    lines += ["", f"### {cfg.rule:g} rule: % of shared classes with row accuracy < {cfg.rule:g} x column accuracy", "",
              "| row \\ column | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for n, row in zip(names, s["matrix"]):
        lines.append(f"| {n} | " + " | ".join("-" if v is None else f"{v:.0f}" for v in row) + " |")
    for col, t in r["seer"].items():
        lines += ["", f"### Top-{cfg.k} hit rate per household, by {col} (SEER indicator 2)", "",
                  "| group | images | hit rate | - others' mean |", "| --- | --- | --- | --- |"]
        for g, a, d in zip(t["groups"], t["rate"], t["diff"]):
            lines.append(f"| {g['name']} | {g['images']} | {pct_ci(a)} | {points_ci(d)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    return analysis_main(GeoConfig, run, argv, "geo", __doc__)


if __name__ == "__main__":
    main()
