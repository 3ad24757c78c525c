r"""Hashtag associations by group (SWAG appendix F.2, Figure 7): which hashtags a model predicts
more, or less, for one group of images than for the others.

    python -m transfer.groups associations model=EXPORT data=UTKFace/ layout=utkface group=race \
        out=R.json [hashtag=mugshot] [k=5] [top=20]

Each image's k = 5 highest-scoring hashtags are its predictions. Per group, a hashtag's rate is
the share of the group's images that predict it; for each group, the `top` hashtags whose rate
differs most (in absolute terms) from the mean rate of the other groups are listed and drawn,
with the relative difference (difference / the others' mean) on each bar, as in Figure 7.
`hashtag=` adds SWAG's follow-up for one hashtag (#mugshot in the paper): its rate and count per
group. Every rate and difference has a 95% bootstrap interval over the group's images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.cli import key
from transfer.groups import ci, metrics
from transfer.groups.config import GroupConfig, analysis_main
from transfer.groups.report import EXACT_NOTE, bars, difference_bars, pct_ci, points_ci, write


@dataclass(frozen=True, kw_only=True)  # its required keys follow the shared defaults
class AssociationsConfig(GroupConfig):
    group: str = key(help="the group column, or columns joined by + (gender+race)")
    k: int = key(5, "predictions per image: its k highest-scoring hashtags")
    top: int = key(20, "hashtags listed per group (largest absolute difference from the other groups)")
    hashtag: str | None = key(None, "a hashtag whose rate and count per group are reported (SWAG: mugshot)")

    def __post_init__(self):
        super().__post_init__()
        if self.k < 1 or self.top < 1:
            raise ValueError(f"k and top must be >= 1, got k={self.k} top={self.top}")


def associations(probs, groups, num_groups: int, k: int = 5, top: int = 20, hashtag: int | None = None,
                 n_boot: int = 1000, seed: int = 0) -> dict:
    """The figures from probabilities [N, H] and group ids [N] (0..G-1; all kept). Keys: rates
    [G][H]; top (per group, metrics.association_differences' entries with rate_ci95 and diff_ci95);
    hashtag (per group: count, images, rate and diff from the others' mean, with intervals)."""
    probs, groups = np.asarray(probs, dtype=np.float64), np.asarray(groups)
    x = metrics.indicator_matrix(metrics.top_k(probs, k), probs.shape[1])
    rates = metrics.group_means(x, groups, num_groups)
    tops = metrics.association_differences(rates, top)
    cols = sorted({e["label"] for t in tops for e in t} | ({hashtag} if hashtag is not None else set()))
    reps = ci.replicate_weights(groups, num_groups, n_boot=n_boot, seed=seed)
    rate, diff = ci.rates_and_differences(rates[:, cols], ci.group_means(x[:, cols], reps), reps)
    where = {h: j for j, h in enumerate(cols)}
    for g, t in enumerate(tops):
        for e in t:
            j = where[e["label"]]
            e["rate_ci95"], e["diff_ci95"] = rate[g][j]["ci95"], diff[g][j]["ci95"]
    out = {"rates": rates.tolist(), "top": tops}
    if hashtag is not None:
        j = where[hashtag]
        out["hashtag"] = [{"count": int(x[groups == g, hashtag].sum()), "images": int((groups == g).sum()),
                           "rate": rate[g][j], "diff": diff[g][j]} for g in range(num_groups)]
    return out


def run(cfg: AssociationsConfig) -> dict:
    from transfer.groups.scores import grouped_hashtag_probs

    s = grouped_hashtag_probs(cfg, cfg.group)
    grp = s.groups
    names = list(s.model.meta["labels"])
    if cfg.hashtag is not None and cfg.hashtag not in names:
        raise ValueError(f"hashtag={cfg.hashtag!r} is not among the model's {len(names)} hashtags")
    h = names.index(cfg.hashtag) if cfg.hashtag is not None else None
    r = associations(s.probs[s.keep], grp.ids[s.keep], len(grp.names), cfg.k, cfg.top, h, cfg.n_boot, cfg.seed)
    for t in r["top"]:
        for e in t:
            e["hashtag"] = names[e["label"]]
    result = {**s.result_head(cfg, "associations"), "hashtags": names, **r}
    figures = {"differences": difference_bars(list(zip(grp.names, r["top"])), names,
                                              f"top-{cfg.k} hashtag rate vs the other groups' mean ({cfg.group})")}
    if h is not None:
        figures["hashtag"] = bars(grp.names, [e["rate"] for e in r["hashtag"]], f"#{cfg.hashtag} rate by {cfg.group}",
                                  f"share of images with #{cfg.hashtag} in the top {cfg.k}")
    md = markdown(cfg, result)
    result = write(cfg, result, md, figures)
    print(md)
    return result


def markdown(cfg: AssociationsConfig, r: dict) -> str:
    lines = [f"## Hashtag associations by {cfg.group}: {cfg.model}", "",
             f"{r['images']} images in {len(r['groups'])} groups; top-{cfg.k} predictions; 95% bootstrap "
             f"intervals over images. Excluded: {r['excluded']['missing value']} images without a value, "
             f"small groups {r['excluded']['small groups'] or 'none'}. {EXACT_NOTE}"]
    for g, t in zip(r["groups"], r["top"]):
        lines += ["", f"### {g['name']} ({g['images']} images)", "",
                  "| hashtag | rate | others' mean | difference (points) | relative |", "| --- | --- | --- | --- | --- |"]
        for e in t:
            d = points_ci({"value": e["diff"], "ci95": e["diff_ci95"]})
            rel = "n/a" if e["relative"] is None else f"{100 * e['relative']:+.0f}%"
            lines.append(f"| {e['hashtag']} | {pct_ci({'value': e['rate'], 'ci95': e['rate_ci95']})} | "
                         f"{100 * e['others']:.1f}% | {d} | {rel} |")
    if "hashtag" in r:
        lines += ["", f"### #{cfg.hashtag}", "", "| group | images | count | rate | difference from the others (points) |",
                  "| --- | --- | --- | --- | --- |"]
        for g, e in zip(r["groups"], r["hashtag"]):
            lines.append(f"| {g['name']} | {e['images']} | {e['count']} | {pct_ci(e['rate'])} | "
                         f"{points_ci(e['diff'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    return analysis_main(AssociationsConfig, run, argv, "associations", __doc__)


if __name__ == "__main__":
    main()
