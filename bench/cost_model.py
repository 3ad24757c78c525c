"""The rehearsal's cost model: its measured CPU seconds and bytes per image per stage, scaled
linearly to 1B and 3.6B images, and GPU pretraining from the papers' published figures.

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


def stage_rows(result: dict) -> list[dict]:
    """Per stage: core-hours and output storage at each scale, from a rehearsal result."""
    rows = []
    for st in result["stages"]:
        row = {"stage": st["stage"], "cpu_s_per_image": st["cpu_s_per_image"],
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


def markdown(result: dict, gpu_images_per_s: float | None = None) -> str:
    """The cost model as Markdown: CPU and storage per stage at 1B and 3.6B images, then GPU."""
    head = ["stage", "CPU s/image", "KB/image"] + [f"core-hours {n}" for n in SCALES] + [f"storage {n} (TB)" for n in SCALES]
    lines = [f"Linear extrapolation of the rehearsal at {result['images']:,} images ({result['machine']}): "
             "not a measurement at scale.", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in stage_rows(result):
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
