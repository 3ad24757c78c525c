"""`make compare`'s report: the table of arms, a line per pair of arms, and the bar chart.

The statistics themselves (arm_summary, paired_difference: hierarchical-bootstrap CIs over
pretraining seeds and val images) are transfer/bootstrap.py's.
"""
from __future__ import annotations

from pipeline.atomic import atomic_path


def _pct_ci(s: dict) -> str:
    lo, hi = s["ci95"]
    return f"{100 * s['mean']:.1f}% [{100 * lo:.1f}%, {100 * hi:.1f}%]"


def compare_table(arms: dict, metrics=("linear_top1", "few_shot_5_top1")) -> str:
    """Markdown table, one row per arm: arm, runs, train_samples, step_cost_s, then per metric
    "mean% [lo%, hi%]" from its arm_summary dict. Missing entries print "-"."""
    lines = ["| " + " | ".join(["arm", "runs", "train_samples", "step_cost_s", *metrics]) + " |",
             "|" + "---|" * (4 + len(metrics))]
    for name, arm in arms.items():
        runs = next((len(arm[m]["runs"]) for m in metrics if m in arm), None)
        cells = [name, "-" if runs is None else str(runs),
                 str(arm["train_samples"]) if "train_samples" in arm else "-",
                 f"{arm['step_cost_s']:.4g}" if "step_cost_s" in arm else "-",
                 *(_pct_ci(arm[m]) if m in arm else "-" for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pairwise_report(pairs: dict, metric: str) -> list[str]:
    """One plain-English line per pair (a, b) about a - b; pairs[(a, b)][metric] is a
    paired_difference dict."""
    lines = []
    for (a, b), by_metric in pairs.items():
        if metric not in by_metric:
            raise ValueError(f"pair {(a, b)} has no metric {metric!r}; it has {sorted(by_metric)}")
        d = by_metric[metric]
        lo, hi = d["ci95"]
        p = "p<0.001" if d["p_value"] < 0.001 else f"p={d['p_value']:.2g}"
        line = f"{a} - {b}: {100 * d['diff']:+.1f} points [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}], "
        if d["significant"]:
            lines.append(line + f"significant ({p})")
            continue
        line += f"not significant ({p}); "
        n_img, n_seed = d["images_needed"], d["seeds_needed"]
        if d["diff"] == 0:
            line += "no difference observed, so no task size would detect it"
        elif n_img is None and n_seed is None:
            line += "neither more val images nor more pretraining seeds alone would detect a difference this size"
        elif n_seed is None:
            line += f"would need ~{n_img} val images to detect a difference this size with 80% power (more seeds alone would not)"
        elif n_img is None:
            line += f"would need ~{n_seed} pretraining seeds per arm to detect a difference this size with 80% power (more val images alone would not)"
        else:
            line += f"would need ~{n_img} val images (or {n_seed} pretraining seeds per arm) to detect a difference this size with 80% power"
        if min(d.get("runs", [2])) < 2:
            line += "; seed-to-seed variance not measured (1 run)"
        lines.append(line)
    return lines


def claim_verdict(claim, d: dict) -> tuple[str, str]:
    """(verdict, the report's sentence) of a claim (experiments/arms.py Claim) from the linear
    probe's paired_difference dict `d` of claim.a - claim.b; where not significant, the val images
    a difference this size needs at 80% power."""
    sig, diff = d["significant"], d["diff"]
    if claim.directional:
        verdict = ("holds" if sig and diff > 0 else "is reversed" if sig
                   else "points the papers' way but is not significant" if diff > 0
                   else "is not seen (not significant)")
        said = f"the ordering {verdict}"
    else:
        verdict = (f"{claim.a} is better" if sig and diff > 0 else f"{claim.b} is better" if sig
                   else "no significant difference")
        said = verdict
    lo, hi = d["ci95"]
    line = (f"**{claim.text}**: on this task, linear probe {claim.a} - {claim.b} = {100 * diff:+.1f} points "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}]: {said}")
    n_img, n_seed = d["images_needed"], d.get("seeds_needed")
    if not sig and diff != 0:
        line += (f" (~{n_img} val images would detect a difference this size with 80% power)" if n_img is not None
                 else f" (more val images alone would not detect a difference this size; ~{n_seed} pretraining seeds "
                      f"per arm would)" if n_seed is not None
                 else " (neither more val images nor more seeds alone would detect a difference this size)")
    return verdict, line + "."


def plot_compare(arms: dict, path, metrics=("linear_top1", "few_shot_5_top1"), title: str = "") -> None:
    """Grouped bars (a group per metric, a bar per arm) with 95% CI whiskers and each run's value
    as a dot; written as PNG to a temporary sibling, then renamed to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(arms)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(2 + 0.6 * len(metrics) * max(1, len(names)), 4))
    try:
        for i, name in enumerate(names):
            label = name  # once per arm, on its first bar
            for j, m in enumerate(metrics):
                if m not in arms[name]:
                    continue
                s, x = arms[name][m], j - 0.4 + width * (i + 0.5)
                lo, hi = s["ci95"]
                ax.bar(x, 100 * s["mean"], width, color=f"C{i}", label=label)
                label = None
                ax.errorbar(x, 100 * s["mean"], yerr=[[100 * (s["mean"] - lo)], [100 * (hi - s["mean"])]],
                            color="black", capsize=3, lw=1)
                ax.scatter([x] * len(s["runs"]), [100 * r for r in s["runs"]], color="black", s=8, zorder=3)
        ax.set_xticks(range(len(metrics)), list(metrics))
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title)
        ax.legend(fontsize="small")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
