"""Dataset card: SWAG Figure 1 and the figures that tell whether resampling did its job.

Pure functions of plain values (arrays and dicts of counts): aggregation helpers, three
matplotlib figures written as PNGs (Agg backend, no display needed) and the Markdown card.
jobs/dataset_card.py does the reading (DuckDB over the Parquet outputs) and calls these.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.sampling import HEAD, split_sizes  # noqa: E402

FIGURES = {"hashtags": "hashtag_frequencies.png", "resampling": "label_frequency_resampling.png",
           "splits": "head_tail_splits.png"}
_BEFORE, _AFTER, _EXPECTED = "tab:blue", "tab:orange", "black"


# --- aggregation helpers ---------------------------------------------------------------------

def rank_frequency(counts) -> np.ndarray:
    """Positive counts sorted descending (rank 1 first); zeros dropped (no point on a log axis)."""
    c = np.asarray(list(counts.values()) if isinstance(counts, dict) else counts, dtype=np.int64)
    if np.any(c < 0):
        raise ValueError("counts must be >= 0")
    return np.sort(c[c > 0])[::-1]


def log_spaced_ranks(n: int, max_points: int = 2000) -> np.ndarray:
    """0-based indices of at most ~max_points ranks, log-spaced, always with the first and last.

    A rank-frequency curve of millions of hashtags looks the same drawn through these.
    """
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.rint(np.geomspace(1, n, max_points)).astype(np.int64) - 1)


def scaled_to_total(counts, total: float) -> np.ndarray:
    """counts * total / sum(counts), so two distributions of different sizes overlay."""
    c = np.asarray(counts, dtype=np.float64)
    s = c.sum()
    if s <= 0:
        raise ValueError("cannot scale counts that sum to 0")
    return c * (total / s)


def label_shift(before: dict[int, int], after: dict[int, int], top: int = 10,
                tail_threshold: int | None = None) -> dict:
    """How much resampling flattened the label distribution.

    before: images carrying each label (labeled table); after: occurrences in the samples.
    The top label is the most frequent one before; its share before / after is the headline.
    `spread` is max/median count over the labels present before (dynamic range of the head).
    With tail_threshold: the share of tail labels (fewer than t images before), before / after.
    """
    if not before or sum(before.values()) <= 0:
        raise ValueError("no labels before resampling")
    if sum(after.values()) <= 0:
        raise ValueError("no label occurrences after resampling")
    unknown = set(after) - set(before)
    if unknown:
        raise ValueError(f"labels sampled but absent from the labeled table: {sorted(unknown)[:10]}")
    labels = sorted(before, key=lambda k: (-before[k], k))
    b = np.array([before[k] for k in labels], dtype=np.float64)
    a = np.array([after.get(k, 0) for k in labels], dtype=np.float64)
    b_share, a_share = b / b.sum(), a / a.sum()
    k = min(top, len(labels))
    return {"labels": len(labels), "top_label": labels[0],
            "top_share_before": float(b_share[0]), "top_share_after": float(a_share[0]),
            "top_share_ratio": float(b_share[0] / a_share[0]) if a_share[0] > 0 else float("inf"),
            "top_k": k, "top_k_share_before": float(b_share[:k].sum()), "top_k_share_after": float(a_share[:k].sum()),
            "max_share_after": float(a_share.max()),
            "spread_before": float(b.max() / np.median(b)), "spread_after": float(a.max() / max(np.median(a), 1e-12)),
            "never_sampled": int(np.sum(a == 0)),
            "tail_share_before": float(b_share[b < tail_threshold].sum()) if tail_threshold else None,
            "tail_share_after": float(a_share[b < tail_threshold].sum()) if tail_threshold else None}


def split_summary(samples: dict[str, int], unique: dict[str, int], alpha: float | None,
                  images: dict[str, int] | None = None) -> dict[str, dict]:
    """Per split: samples, share of all samples, expected share (None without alpha), natural share
    (the split's share of the labeled images, i.e. without resampling; None without `images`),
    unique images, duplication factor (samples per unique image)."""
    total = sum(samples.values())
    if total <= 0:
        raise ValueError("no samples")
    n_images = sum(images.values()) if images else 0
    expected = None
    if alpha is not None:
        sizes = split_sizes(total, alpha)
        expected = {s: n / total for s, n in sizes.items()}
    out = {}
    for s in sorted(samples, key=lambda s: (s != HEAD, s)):
        n, u = samples[s], unique.get(s, 0)
        out[s] = {"samples": n, "share": n / total, "expected_share": expected.get(s, 0.0) if expected else None,
                  "natural_share": images.get(s, 0) / n_images if n_images else None,
                  "unique_images": u, "duplication_factor": n / u if u else None}
    return out


def resolve_parameters(alpha: float | None, tail_threshold: int | None, samples_stats: dict,
                       labeled_stats: dict) -> tuple[float | None, int, tuple[str, ...]]:
    """(alpha, t, warnings): flags given win, else the values the stages ran with (their stats.json
    config). alpha is None when the samples' strategy draws hashtags (no head/tail split)."""
    run_alpha = samples_stats.get("config", {}).get("alpha")
    run_t = labeled_stats.get("config", {}).get("tail_threshold")
    importance = samples_stats.get("config", {}).get("strategy", "importance") == "importance"
    a = alpha if alpha is not None else run_alpha
    t = tail_threshold if tail_threshold is not None else run_t
    if t is None or (a is None and importance):
        raise ValueError("the stats.json files do not record the tail threshold and alpha: give --tail-threshold "
                         "and --alpha")
    notes = tuple(f"Warning: --{k} {v} differs from the {v0} the pipeline ran with." for k, v, v0 in
                  [("alpha", alpha, run_alpha if importance else None), ("tail-threshold", tail_threshold, run_t)]
                  if v is not None and v0 is not None and v != v0)
    return (a if importance else None), int(t), notes


def flatten_counts(stats: dict, prefix: str = "") -> dict[str, int]:
    """Integer leaves of a stats dict as 'a.b' -> n; the 'config' subtree is skipped."""
    out = {}
    for k, v in stats.items():
        if k == "config":
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_counts(v, key + "."))
        elif isinstance(v, int) and not isinstance(v, bool):
            out[key] = v
    return out


def _verdict(ratio: float) -> str:
    return "flatter" if ratio > 1.0 else "NOT flatter"


# --- figures ---------------------------------------------------------------------------------

def _plain_log_ticks(ax) -> None:
    """Log axes labelled 1, 10, 1,000 rather than 10^k; the 2s and 5s in between labelled too when
    the axis spans less than two decades (else a small plot would show one or two labels)."""
    def plain(v, _):
        return f"{v:,.0f}" if v >= 1 else f"{v:g}"

    def two_five(v, _):
        return plain(v, _) if f"{v:e}"[0] in "25" else ""

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_major_formatter(FuncFormatter(plain))
        axis.set_minor_formatter(FuncFormatter(two_five) if hi / max(lo, 1e-12) < 100 else NullFormatter())


def _rank_curve(ax, counts: np.ndarray, **kw):
    idx = log_spaced_ranks(len(counts))
    return ax.plot(idx + 1, counts[idx], **kw)


def plot_hashtag_frequencies(raw_counts, canonical_counts, tail_threshold: int, path: Path) -> None:
    """SWAG Figure 1: log-log rank-frequency of raw (normalized) hashtags and of canonical labels,
    the latter with the head/tail threshold."""
    raw, canon = rank_frequency(raw_counts), rank_frequency(canonical_counts)
    if not len(raw) or not len(canon):
        raise ValueError("need at least one raw hashtag and one canonical label to plot")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
    _rank_curve(a, raw, color=_BEFORE, lw=1.8)
    a.set_title(f"Raw hashtags (normalized): {len(raw):,} distinct")
    _rank_curve(b, canon, color=_BEFORE, lw=1.8)
    n_tail = int(np.sum(canon < tail_threshold))
    b.axhline(tail_threshold, color="tab:red", ls="--", lw=1.2,
              label=f"tail threshold t = {tail_threshold:,}\n{n_tail:,} of {len(canon):,} labels below it (tail)")
    b.set_title(f"Canonical hashtags (WordNet labels): {len(canon):,}")
    b.legend(loc="upper right", fontsize=9)
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rank (1 = most frequent)")
        ax.grid(True, which="major", alpha=0.3)
    a.set_ylabel("images with the hashtag")
    lo = min(raw.min(), canon.min(), tail_threshold)
    hi = max(raw.max(), canon.max(), tail_threshold)
    a.set_ylim(lo / 1.5, hi * 1.5)
    for ax in (a, b):
        _plain_log_ticks(ax)
    fig.suptitle("Hashtag frequency distribution (SWAG Figure 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_label_resampling(before: dict[int, int], after: dict[int, int], path: Path,
                          tail_threshold: int | None = None) -> None:
    """Per label: images in the labeled table vs occurrences in the samples (scaled to the same
    total), by the label's rank before resampling. A flatter orange curve = a tamer Zipf head.
    With tail_threshold, a vertical line separates head labels (f >= t) from tail labels."""
    shift = label_shift(before, after, tail_threshold=tail_threshold)
    labels = sorted(before, key=lambda k: (-before[k], k))
    b = np.array([before[k] for k in labels], dtype=np.float64)
    a = scaled_to_total([after.get(k, 0) for k in labels], b.sum())
    ranks = np.arange(1, len(labels) + 1)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(ranks, b, color=_BEFORE, lw=2, label="before: images per label (labeled table)")
    shown = a > 0
    ax.scatter(ranks[shown], a[shown], s=9, color=_AFTER, alpha=0.55,
               label="after: occurrences in the samples, same label (scaled to the same total)")
    a_sorted = np.sort(a[shown])[::-1]
    ax.plot(np.arange(1, len(a_sorted) + 1), a_sorted, color=_AFTER, lw=2,
            label="after: sorted rank-frequency")
    if tail_threshold is not None:
        n_head = int(np.sum(b >= tail_threshold))
        ax.axvline(n_head + 0.5, color="tab:red", ls=":", lw=1.5,
                   label=f"{n_head:,} head labels (f >= t = {tail_threshold:,}) | tail labels")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("label rank before resampling (1 = most frequent)")
    ax.set_ylabel(f"images / scaled occurrences (total {b.sum():,.0f})")
    note = (f"top label's share: {shift['top_share_before']:.1%} before, {shift['top_share_after']:.1%} after "
            f"(before/after = {shift['top_share_ratio']:.2f}: {_verdict(shift['top_share_ratio'])})\n"
            f"max/median: {shift['spread_before']:.0f} before, "
            f"{shift['spread_after']:.0f} after")
    if tail_threshold is not None:
        note += (f"\ntail labels' share: {shift['tail_share_before']:.1%} before, "
                 f"{shift['tail_share_after']:.1%} after")
    if shift["never_sampled"]:
        note += f"\n{shift['never_sampled']:,} labels never sampled (not shown)"
    ax.text(0.02, 0.03, note, transform=ax.transAxes, fontsize=9, va="bottom",
            bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    ax.legend(loc="upper right", fontsize=8.5)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title("Label frequency before vs after resampling")
    _plain_log_ticks(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_splits(splits: dict[str, dict], alpha: float | None, path: Path) -> None:
    """Left: each split's share of the samples vs the share alpha asks for. Right: unique images vs
    samples per split, with the duplication factor."""
    names = list(splits)
    x = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.3))
    shares = [splits[s]["share"] for s in names]
    a.bar(x, shares, color=[_BEFORE if s == HEAD else _AFTER for s in names], width=0.6)
    for i, s in enumerate(names):
        exp, nat = splits[s]["expected_share"], splits[s]["natural_share"]
        text = f"{shares[i]:.1%}"
        if nat is not None:
            a.hlines(nat, i - 0.4, i + 0.4, color="tab:red", ls=":", lw=1.8,
                     label="share of labeled images (no resampling)" if i == 0 else None)
        if exp is not None:
            a.hlines(exp, i - 0.4, i + 0.4, color=_EXPECTED, ls="--", lw=1.5,
                     label="expected from alpha" if i == 0 else None)
            text += f"\nexpected {exp:.1%}"
        if nat is not None:
            text += f"\nno resampling {nat:.1%}"
        top = max(v for v in (shares[i], exp, nat) if v is not None)
        a.text(i, top + 0.02, text, ha="center", va="bottom", fontsize=9)
    a.set_xticks(x, names)
    a.set_ylim(0, 1.25)
    a.set_ylabel("share of all samples")
    a.set_title(f"Samples per split (alpha = {alpha})" if alpha is not None else "Samples per split")
    if a.get_legend_handles_labels()[0]:
        a.legend(loc="upper right", fontsize=9)
    w = 0.38
    uniq = [splits[s]["unique_images"] for s in names]
    samp = [splits[s]["samples"] for s in names]
    b.bar(x - w / 2, uniq, w, color="0.6", label="unique images")
    b.bar(x + w / 2, samp, w, color=_BEFORE, label="samples")
    for i, s in enumerate(names):
        d = splits[s]["duplication_factor"]
        b.text(i + w / 2, samp[i], f"x{d:.2f}" if d else "-", ha="center", va="bottom", fontsize=9)
    b.set_xticks(x, names)
    b.set_ylim(0, max(samp + uniq) * 1.15)
    b.set_ylabel("count")
    b.set_title("Unique images vs samples (x = duplication factor)")
    b.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the card --------------------------------------------------------------------------------

def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


@dataclass(frozen=True)
class CardData:
    """Everything the card shows, as plain values.

    inputs: (name, path, rows); stages: stage -> {count name: n} (drops and what was read/kept);
    raw_counts / canonical_counts: images per normalized hashtag / per label (vocab `images`);
    top_labels: dicts with label, name, images, key and hashtags, a list of (hashtag, images)
    merged into the label; head_tail_images: labeled images per split; samples / unique: samples
    and distinct images per split; before / after: label -> images in the labeled table /
    occurrences in the samples; alpha None when the strategy does not split head/tail; balancing:
    the resample stats' `metaclip` entry (cap, label_images, per-epoch draws) of a MetaCLIP index.
    """
    title: str
    command: str
    inputs: list[tuple[str, str, int | str]]
    stages: dict[str, dict[str, int]]
    raw_counts: np.ndarray
    canonical_counts: np.ndarray
    top_labels: list[dict]
    tail_threshold: int
    alpha: float | None
    head_tail_images: dict[str, int]
    samples: dict[str, int]
    unique: dict[str, int]
    before: dict[int, int]
    after: dict[int, int]
    notes: tuple[str, ...] = ()
    balancing: dict | None = None


def stage_counts(vocab_stats: dict, label_stats: dict, ingest_stats: dict | None,
                 dedup_stats: dict | None = None) -> dict[str, dict[str, int]]:
    """Counts and drops by stage from the stats.json files (read, every drop reason, kept)."""
    v, lab = vocab_stats, label_stats
    stages = {"ingest": flatten_counts(ingest_stats or {}),
              "dedup": flatten_counts(dedup_stats or {}),
              "vocab rows": {"read": v.get("rows_read"), **v.get("rows_dropped", {}), "kept": v.get("rows_kept")},
              "vocab hashtags": {"distinct": v.get("distinct_hashtags"), **v.get("hashtags_dropped", {}),
                                 "kept": v.get("hashtags_kept")},
              "label rows": {"read": lab.get("rows_read"), **lab.get("rows_dropped", {}), "kept": lab.get("rows_kept")}}
    stages = {st: {k: n for k, n in d.items() if n is not None} for st, d in stages.items()}
    return {st: d for st, d in stages.items() if d}


def balancing_section(m: dict) -> list[str]:
    """A MetaCLIP-balanced index per epoch: samples kept, expected (sum p_i), mean samples of the labels with f >= T."""
    head = np.asarray(m["label_images"]) >= m["cap"]
    rows = [[e, str(r["seed"]), r["samples"], float(r["expected_samples"]),
             float(np.asarray(r["label_samples"])[head].mean()) if head.any() else "n/a"]
            for e, r in enumerate(m["epochs"])]
    return [f"MetaCLIP balancing, cap T = {m['cap']:,}: each image kept at most once per epoch, with probability "
            "1 - prod over its labels of (1 - min(1, T / f)); the samples above are epoch 0's. Expected shares: "
            f"n/a (alpha does not apply). {int(head.sum()):,} labels have f >= T.", ""] + _table(
        ["epoch", "seed", "samples kept", "expected (sum p_i)", "mean samples per label with f >= T"], rows) + [""]


def write_card(d: CardData, directory: Path) -> dict:
    """Write the three figures and dataset_card.md into `directory`; return {splits, shift}."""
    splits = split_summary(d.samples, d.unique, d.alpha, d.head_tail_images)
    shift = label_shift(d.before, d.after, tail_threshold=d.tail_threshold)
    plot_hashtag_frequencies(d.raw_counts, d.canonical_counts, d.tail_threshold, directory / FIGURES["hashtags"])
    plot_label_resampling(d.before, d.after, directory / FIGURES["resampling"], d.tail_threshold)
    plot_splits(splits, d.alpha, directory / FIGURES["splits"])
    (directory / "dataset_card.md").write_text(card_markdown(d, splits, shift) + "\n")
    return {"splits": splits, "shift": shift}


def card_markdown(d: CardData, splits: dict[str, dict], shift: dict) -> str:
    """The Markdown card; splits from split_summary, shift from label_shift."""
    canon = rank_frequency(d.canonical_counts)
    t = d.tail_threshold
    names = {r["label"]: r["name"] for r in d.top_labels}
    top = shift["top_label"]
    md = [f"# {d.title}", "", f"Generated by `{d.command}`", ""]
    md += [f"> **{n}**" for n in d.notes] + ([""] if d.notes else [])
    md += ["## Inputs", ""] + _table(["input", "path", "rows"], [list(r) for r in d.inputs])
    md += ["", "## Counts and drops by stage", ""]
    md += _table(["stage", "count", "n"], [[st, k, n] for st, c in d.stages.items() for k, n in c.items()])
    md += ["", "## Hashtag frequencies (SWAG Figure 1)", "",
           f"{len(rank_frequency(d.raw_counts)):,} distinct normalized hashtags merge into {len(canon):,} canonical "
           f"labels. {int(np.sum(canon < t)):,} labels are used by fewer than t = {t:,} images; an image carrying "
           "one of them is a tail image.", "",
           f"![Rank-frequency of raw and canonical hashtags]({FIGURES['hashtags']})", ""]
    md += _table(["labeled images", "count"], [[k, v] for k, v in d.head_tail_images.items()])
    md += ["", f"### Top {len(d.top_labels)} canonical hashtags", ""]
    md += _table(["label", "name", "images", "merged hashtags (images each)", "synsets"],
                 [[r["label"], r["name"], r["images"], ", ".join(f"{h} ({n:,})" for h, n in r["hashtags"]), r["key"]]
                  for r in d.top_labels])
    md += ["", "## Resampling", "",
           f"Top label ({top}{', ' + names[top] if top in names else ''}): {shift['top_share_before']:.2%} of label "
           f"occurrences before resampling, {shift['top_share_after']:.2%} after; before/after = "
           f"**{shift['top_share_ratio']:.2f}** ({_verdict(shift['top_share_ratio'])}). "
           f"Top {shift['top_k']} labels: {shift['top_k_share_before']:.2%} before, {shift['top_k_share_after']:.2%} "
           f"after. Max/median label count: {shift['spread_before']:.1f} before, {shift['spread_after']:.1f} after. "
           f"Tail labels (fewer than t = {t:,} images): {shift['tail_share_before']:.2%} of label occurrences "
           f"before, {shift['tail_share_after']:.2%} after. "
           f"Labels never sampled: {shift['never_sampled']:,} of {shift['labels']:,}.", "",
           f"![Label frequency before vs after resampling]({FIGURES['resampling']})", ""]
    if d.balancing is not None:
        md += balancing_section(d.balancing)
    elif d.alpha is None:
        md += ["Expected shares: n/a (this strategy draws hashtags; alpha does not apply).", ""]
    md += _table(["split", "samples", "share", "expected share", "share without resampling", "unique images",
                  "duplication factor"],
                 [[s, v["samples"], _pct(v["share"]), _pct(v["expected_share"]), _pct(v["natural_share"]),
                   v["unique_images"], "n/a" if v["duplication_factor"] is None else f"{v['duplication_factor']:.3f}"]
                  for s, v in splits.items()])
    md += ["", f"![Head/tail share of samples and duplication]({FIGURES['splits']})", ""]
    return "\n".join(md)
