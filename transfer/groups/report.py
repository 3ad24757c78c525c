"""Writing an analysis: the JSON result (with its config) and the Markdown summary next to each
other (transfer/protocol.py write_result), and its figures as `<out stem>.<name>.png` beside them,
each drawn with matplotlib's Agg backend (no display, nothing fetched) and renamed into place."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from transfer.protocol import write_result


# said under every summary table: where a percentile interval would be a single point
EXACT_NOTE = ("A rate of 0 or 100% takes the exact (Clopper-Pearson) bound over the group's images (or households) "
              "as its interval's far end; each difference it enters widens by as much.")


def figure_path(out: str, name: str) -> Path:
    o = Path(out)
    return o.with_name(f"{o.stem}.{name}.png")


def pct_ci(fig: dict) -> str:
    """"41.2% [38.0, 44.1]" from {"value", "ci95"} (rates in [0, 1]); "-" for no value."""
    v, (lo, hi) = fig["value"], fig["ci95"]
    if v is None:
        return "-"
    return f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else f"{100 * v:.1f}%"


def points_ci(fig: dict) -> str:
    """"+12.3 [+4.0, +20.1]" (percentage points) from a difference's {"value", "ci95"}; "-" for none."""
    v, (lo, hi) = fig["value"], fig["ci95"] or (None, None)
    if v is None:
        return "-"
    return f"{100 * v:+.1f}" + (f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None else "")


def write(cfg, result: dict, markdown: str, figures: dict) -> dict:
    """figures: name -> a function drawing on a matplotlib Figure. Returns the result with the
    figure paths under "figures"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for name, draw in figures.items():
        fig = plt.figure(figsize=(8, 4.5))
        try:
            draw(fig)
            fig.tight_layout()
            p = figure_path(cfg.out, name)
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format="png", dpi=100)
            paths[name] = str(p)
        finally:
            plt.close(fig)
    result = {**result, "figures": paths}
    write_result(cfg, result, markdown)
    return result


def bars(names, figs: list[dict], title: str, ylabel: str):
    """A bar per group with its 95% interval as an error bar."""
    def draw(fig):
        ax = fig.add_subplot()
        v = np.array([f["value"] if f["value"] is not None else np.nan for f in figs])
        lo = np.array([f["ci95"][0] if f["ci95"][0] is not None else np.nan for f in figs])
        hi = np.array([f["ci95"][1] if f["ci95"][1] is not None else np.nan for f in figs])
        x = np.arange(len(names))
        ax.bar(x, v, yerr=np.nan_to_num(np.stack([v - lo, hi - v]).clip(0)), capsize=3, color="#4c72b0")
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    return draw


def heatmap(matrix, names, title: str, label: str):
    def draw(fig):
        ax = fig.add_subplot()
        im = ax.imshow(np.asarray(matrix, dtype=float), cmap="viridis", vmin=0, vmax=100)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel("column country")
        ax.set_ylabel("row country")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, label=label)
    return draw


def difference_bars(groups: list[tuple[str, list[dict]]], label_names: list[str], title: str):
    """SWAG Figure 7's layout: per group a panel of horizontal bars, the difference of each label's
    rate from the other groups' mean, the relative difference written on the bar."""
    def draw(fig):
        cols = min(4, len(groups))
        rows = -(-len(groups) // cols)
        fig.set_size_inches(4.5 * cols, rows * (0.3 * max(len(e) for _, e in groups) + 1.5))
        for i, (name, entries) in enumerate(groups):
            ax = fig.add_subplot(rows, cols, i + 1)
            y = np.arange(len(entries))[::-1]
            d = [100 * e["diff"] for e in entries]
            ax.barh(y, d, color=["#c44e52" if v > 0 else "#4c72b0" for v in d])
            for yy, v, e in zip(y, d, entries):
                rel = "n/a" if e["relative"] is None else f"{100 * e['relative']:+.0f}%"
                ax.text(v, yy, f" {rel} ", va="center", ha="left" if v >= 0 else "right", fontsize=6)
            ax.set_yticks(y, [label_names[e["label"]] for e in entries], fontsize=7)
            ax.axvline(0, color="black", lw=0.5)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("rate - others' mean (points)", fontsize=7)
        fig.suptitle(title, fontsize=10)
    return draw
