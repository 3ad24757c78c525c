"""The rehearsal's cost model: its measured CPU seconds and bytes per image per stage, scaled
linearly to 1B and 3.6B images, and GPU pretraining from the papers' published figures.

    python -m bench.cost_model SMALL/rehearsal.json LARGE/rehearsal.json [gpu_images_per_s=N]

With two rehearsals (`scaling`), each stage's cost splits into a fixed part and a marginal one
(the slope between the two sizes), and the extrapolation uses the marginal cost per image, which
is what grows with the corpus; the table also shows whether cost per image and peak RSS are flat.

A linear extrapolation from one small run on one machine: fixed costs (JVM start, WordNet
lookups of the distinct hashtags, per-job overhead) are charged per image, which overstates small
runs, and whatever grows faster than linearly at scale (shuffles, skew, the dedup index against a
larger evaluation set) is not seen. GPU figures are not measured here.
"""
from __future__ import annotations

SCALES = {"1B": 1_000_000_000, "3.6B": 3_600_000_000}

# SEER (Goyal et al. 2021, "Self-supervised Pretraining of Visual Features in the Wild", section
# 3.2): RegNetY-256GF with SwAV, 1B images seen (one pass), 114,890 iterations of 8,704 images on
# 512 V100 32GB GPUs, "summing to 8 days of training". Published, not measured here.
SEER = {"model": "RegNetY-256GF (SwAV)", "gpus": 512, "gpu": "V100 32GB", "days": 8, "samples": 1_000_000_000}
# SWAG (Singh et al. 2022, section 3): one epoch over IG-3.6B's ~3.6B unique images processes
# ~5B samples after head/tail resampling. Its per-GPU throughput is not published in a form we
# could find; the GPU hours are then the formula below, with the throughput as an input.
SWAG_EPOCH_SAMPLES = {"3.6B": 5_000_000_000}


def stage_rows(result: dict, marginal: dict | None = None) -> list[dict]:
    """Per stage: core-hours and output storage at each scale, from a rehearsal result; CPU per
    image from `marginal` {stage: CPU s per image} where given (see `scaling`)."""
    rows = []
    for st in result["stages"]:
        cpu = st["cpu_s_per_image"] if marginal is None else marginal[st["stage"]]
        row = {"stage": st["stage"], "cpu_s_per_image": cpu,
               "bytes_per_image": st["output_bytes"] / result["images"]}
        for name, n in SCALES.items():
            row[f"core_hours_{name}"] = row["cpu_s_per_image"] * n / 3600
            row[f"storage_tb_{name}"] = row["bytes_per_image"] * n / 1e12
        rows.append(row)
    corpus = {"stage": "corpus (input, img2dataset tars + parquet)", "cpu_s_per_image": None,
              "bytes_per_image": result["corpus_bytes"] / result["images"]}
    for name, n in SCALES.items():
        corpus[f"core_hours_{name}"] = None
        corpus[f"storage_tb_{name}"] = corpus["bytes_per_image"] * n / 1e12
    total = {"stage": "total (stages)", "cpu_s_per_image": sum(r["cpu_s_per_image"] for r in rows),
             "bytes_per_image": sum(r["bytes_per_image"] for r in rows)}
    for name in SCALES:
        total[f"core_hours_{name}"] = sum(r[f"core_hours_{name}"] for r in rows)
        total[f"storage_tb_{name}"] = sum(r[f"storage_tb_{name}"] for r in rows)
    return [*rows, total, corpus]


def seer_gpu_hours(samples: int) -> float:
    """SEER's published V100 hours scaled linearly by samples seen."""
    return SEER["gpus"] * SEER["days"] * 24 * samples / SEER["samples"]


def swag_gpu_hours(samples: int, images_per_s_per_gpu: float) -> float:
    """GPU hours = samples seen / (images per second per GPU) / 3600."""
    return samples / images_per_s_per_gpu / 3600


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def scaling(small: dict, large: dict) -> list[dict]:
    """Per stage of two rehearsals (small, large images): CPU ms per image at each size and their
    ratio, the marginal CPU s per image (the slope between the sizes) and the fixed CPU s it
    implies, peak RSS of driver and executors at each size and their ratios."""
    n0, n1 = small["images"], large["images"]
    big = {st["stage"]: st for st in large["stages"]}
    rows = []
    for a in small["stages"]:
        b = big[a["stage"]]
        slope = (b["cpu_s"] - a["cpu_s"]) / (n1 - n0)
        rows.append({"stage": a["stage"], "cpu_ms_small": 1e3 * a["cpu_s"] / n0, "cpu_ms_large": 1e3 * b["cpu_s"] / n1,
                     "per_image_ratio": (b["cpu_s"] / n1) / (a["cpu_s"] / n0), "marginal_cpu_s": slope,
                     "fixed_cpu_s": a["cpu_s"] - slope * n0,
                     "wall_s_small": a["wall_s"], "wall_s_large": b["wall_s"],
                     **{f"{k}_rss_mb_{side}": st[f"{k}_peak_rss_mb"] for side, st in (("small", a), ("large", b))
                        for k in ("driver", "executor")}})
    return rows


def scaling_markdown(small: dict, large: dict) -> str:
    n0, n1 = small["images"], large["images"]
    lines = [f"| stage | wall s {n0:,} / {n1:,} | CPU ms/image {n0:,} | CPU ms/image {n1:,} | ratio | marginal CPU "
             f"ms/image | fixed CPU s | driver RSS MB | executor RSS MB |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in scaling(small, large):
        lines.append(f"| {r['stage']} | {r['wall_s_small']:.0f} / {r['wall_s_large']:.0f} | {r['cpu_ms_small']:.2f} | "
                     f"{r['cpu_ms_large']:.2f} | {r['per_image_ratio']:.2f}x | {1e3 * r['marginal_cpu_s']:.2f} | "
                     f"{r['fixed_cpu_s']:.0f} | {r['driver_rss_mb_small']:.0f} -> {r['driver_rss_mb_large']:.0f} | "
                     f"{r['executor_rss_mb_small']:.0f} -> {r['executor_rss_mb_large']:.0f} |")
    return "\n".join(lines)


def markdown(result: dict, gpu_images_per_s: float | None = None, small: dict | None = None) -> str:
    """The cost model as Markdown: CPU and storage per stage at 1B and 3.6B images, then GPU. With
    `small` (a smaller rehearsal), CPU per image is the marginal cost between the two."""
    head = ["stage", "CPU s/image", "KB/image"] + [f"core-hours {n}" for n in SCALES] + [f"storage {n} (TB)" for n in SCALES]
    how = (f"the marginal CPU cost per image between the rehearsals at {small['images']:,} and {result['images']:,} "
           f"images" if small else f"the rehearsal at {result['images']:,} images")
    lines = [f"Linear extrapolation of {how} ({result['machine']}): not a measurement at scale.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    marginal = {r["stage"]: r["marginal_cpu_s"] for r in scaling(small, result)} if small else None
    for r in stage_rows(result, marginal):
        cells = [r["stage"], _num(r["cpu_s_per_image"], ".2e"), _num(r["bytes_per_image"] / 1e3, ".2f")]
        cells += [_num(r[f"core_hours_{n}"], ",.0f") for n in SCALES] + [_num(r[f"storage_tb_{n}"], ".2f") for n in SCALES]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "GPU pretraining, **not measured here** (published figures, scaled linearly by samples seen):", "",
              "| run | samples seen | GPU-hours | source |", "|---|---:|---:|---|"]
    for name, n in SCALES.items():
        lines.append(f"| SEER {SEER['model']}, {name} samples | {n:,} | {seer_gpu_hours(n):,.0f} {SEER['gpu']} | "
                     "Goyal et al. 2021 sec. 3.2: 512 GPUs x 8 days for 1B |")
    samples = SWAG_EPOCH_SAMPLES["3.6B"]
    if gpu_images_per_s:
        swag = f"{swag_gpu_hours(samples, gpu_images_per_s):,.0f} (at {gpu_images_per_s:g} img/s/GPU, an input)"
    else:
        swag = "samples / (img/s per GPU) / 3600 (pass gpu_images_per_s=)"
    lines.append(f"| SWAG RegNetY-16GF / ViT-L/16, one IG-3.6B epoch | {samples:,} | {swag} | "
                 "Singh et al. 2022: ~5B samples per epoch; throughput not published |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    import json
    import sys

    args = argv if argv is not None else sys.argv[1:]
    paths = [a for a in args if "=" not in a]
    gpu = next((float(a.split("=", 1)[1]) for a in args if a.startswith("gpu_images_per_s=")), None)
    if len(paths) != 2:
        raise SystemExit("usage: python -m bench.cost_model SMALL/rehearsal.json LARGE/rehearsal.json "
                         "[gpu_images_per_s=N]")
    small, large = (json.loads(open(p).read()) for p in paths)
    out = scaling_markdown(small, large) + "\n\n" + markdown(large, gpu, small)
    print(out)
    return out


if __name__ == "__main__":
    main()
