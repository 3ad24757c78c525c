"""Shard writing and shard loading on the same openclipart-derived JPEGs, against plain baselines.

    python -m bench.shards_bench [--images 2000] [--workdir build/bench] [--epochs 4] [--workers 1,2]

(a) jobs/shards.py (Spark local[2]) on a samples table of N JPEGs vs a single-process Pillow loop
doing the same work (open, RGB, shorter side to 320 with LANCZOS, JPEG q90), and
pipeline.images.prepare_image alone, as images/s per core (target: Spark overhead <= 15%).
(b) images/s of decode + RandomResizedCrop(224) + flip, batch 64, for the trainer's WebDataset and
FFCV readers and a torchvision ImageFolder DataLoader over the same JPEG bytes as the WebDataset
shards, with 1 and 2 workers, one warm-up epoch excluded (targets: FFCV >= 3x ImageFolder per
core, WebDataset >= 1x). The source JPEGs (RGB, 480 px shorter side, class = openclipart
category) are made once under WORKDIR/jpegs; results go to WORKDIR/shards-results-<N>.json.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench.pipeline_bench import CpuSampler, machine_busy_seconds, own_seconds
from jobs.lib.config import parse_config

MASTER, SPARK_CORES = "local[2]", 2
OPENCLIPART = Path("/usr/share/openclipart/png")
_LOADERS_ALIVE = []  # numba's finalizers print KeyErrors when a used FFCV Loader is collected


@dataclass(frozen=True)
class ShardsBenchConfig:
    images: int = field(default=2000, metadata={"help": "openclipart PNGs to turn into source JPEGs"})
    workdir: str = field(default="build/bench", metadata={"help": "JPEG cache and outputs"})
    source_side: int = field(default=480, metadata={"help": "shorter side of the source JPEGs"})
    max_side: int = field(default=320, metadata={"help": "shards job --max-side (and the plain loop's)"})
    quality: int = field(default=90, metadata={"help": "JPEG quality of the shards and the plain loop"})
    shard_size: int = field(default=250, metadata={"help": "samples per tar shard"})
    batch_size: int = field(default=64, metadata={"help": "loader batch size"})
    size: int = field(default=224, metadata={"help": "RandomResizedCrop output side"})
    epochs: int = field(default=4, metadata={"help": "measured loader epochs (after one warm-up epoch)"})
    workers: tuple[str, ...] = field(default=("1", "2"), metadata={"help": "loader worker counts"})
    seed: int = field(default=0, metadata={"help": "image selection and loader seed"})
    spark_conf: tuple[str, ...] = field(default=(), metadata={"help": "extra key=value Spark settings"})

    def __post_init__(self):
        if self.images < self.batch_size:
            raise ValueError(f"--images must be >= --batch-size ({self.batch_size}), got {self.images}")
        if self.epochs < 1 or not self.workers or not all(w.isdigit() and int(w) > 0 for w in self.workers):
            raise ValueError("--epochs must be >= 1 and --workers positive integers")
        if -(-self.images // self.shard_size) < max(int(w) for w in self.workers):
            raise ValueError("need at least as many shards as loader workers: lower --shard-size")
        if any("=" not in kv for kv in self.spark_conf):
            raise ValueError(f"--spark-conf takes key=value pairs, got {self.spark_conf}")


# --- inputs ------------------------------------------------------------------------------------

def on_white(im: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white (clipart is mostly transparent)."""
    im = im.convert("RGBA")
    white = Image.new("RGB", im.size, (255, 255, 255))
    white.paste(im, mask=im.getchannel("A"))
    return white


def source_jpegs(cfg: ShardsBenchConfig) -> list[tuple[str, Path, str]]:
    """(image_id, path, category) of N JPEGs under WORKDIR/jpegs-<N>, made once (list.json last)."""
    root = Path(cfg.workdir) / f"jpegs-{cfg.images}-{cfg.source_side}-s{cfg.seed}"
    listing = root / "list.json"
    if not listing.is_file():
        t0 = time.perf_counter()
        pngs = sorted(OPENCLIPART.rglob("*.png"))
        rng = np.random.default_rng(cfg.seed)
        rows = []
        for i in rng.permutation(len(pngs)):
            p = pngs[i]
            with Image.open(p) as im:
                w, h = im.size
                if max(w, h) > 3 * min(w, h) or min(w, h) < 16:  # banners and specks: not photos
                    continue
                rgb = on_white(im)
            s = cfg.source_side / min(w, h)
            rgb = rgb.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
            rel = p.relative_to(OPENCLIPART)
            category, image_id = rel.parts[0], "__".join(rel.with_suffix("").parts)
            out = root / category / f"{image_id}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            rgb.save(out, "JPEG", quality=95)
            rows.append((image_id, str(out.resolve()), category))
            if len(rows) == cfg.images:
                break
        if len(rows) < cfg.images:
            raise ValueError(f"only {len(rows)} usable openclipart PNGs in {OPENCLIPART}, asked for {cfg.images}")
        listing.write_text(json.dumps(rows))
        print(f"[shards-bench] made {len(rows)} source JPEGs in {root} in {time.perf_counter() - t0:.0f}s", flush=True)
    return [(i, Path(p), c) for i, p, c in json.loads(listing.read_text())]


def write_samples_table(rows, out: Path) -> list[str]:
    """A samples table (schemas.SAMPLES) with one sample per image; label = category index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import schemas

    classes = sorted({c for _, _, c in rows})
    table = pa.Table.from_pylist([{"position": k, "image_id": i, "image": str(p), "labels": [classes.index(c)],
                                   "tail": False} for k, (i, p, c) in enumerate(rows)], schema=schemas.SAMPLES)
    shutil.rmtree(out, ignore_errors=True)
    (out / "samples.parquet").mkdir(parents=True)
    table = schemas.with_class_count(table, len(classes), "categories")
    pq.write_table(table, out / "samples.parquet" / "part-0.parquet")
    (out / "stats.json").write_text(json.dumps({"samples": len(rows)}))
    return classes


# --- (a) writing -------------------------------------------------------------------------------

def plain_loop(paths: list[Path], side: int, quality: int) -> tuple[float, float, dict]:
    """Single-process Pillow: (wall s, CPU s, image path -> sha256 of the JPEG)."""
    out = {}
    c0, t0 = own_seconds(), time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        w, h = rgb.size
        s = side / min(w, h)
        if s < 1:
            rgb = rgb.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS, reducing_gap=3.0)
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=quality)
        out[str(p)] = hashlib.sha256(buf.getvalue()).hexdigest()
    return time.perf_counter() - t0, own_seconds() - c0, out


def prepare_loop(paths: list[Path], side: int, quality: int) -> tuple[float, float]:
    from pipeline.images import ImageSpec, prepare_image, read_image_bytes

    spec = ImageSpec(side, quality)
    c0, t0 = own_seconds(), time.perf_counter()
    for p in paths:
        prepare_image(read_image_bytes(str(p)), spec)
    return time.perf_counter() - t0, own_seconds() - c0


def spark_shards(cfg: ShardsBenchConfig, samples: Path, out: Path) -> dict:
    """Session start-up, the shards job (wds) on a fresh OUT, then a rerun adding the FFCV .beton."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from jobs.lib.session import get_session
    from jobs.shards import ShardsConfig, run

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "2g",
            **dict(kv.split("=", 1) for kv in cfg.spark_conf)}
    spark = get_session("shards-bench", MASTER, conf)
    spark.range(1).count()
    res = {"session_s": time.perf_counter() - t0}
    cpu = CpuSampler()
    for name, fmt in (("wds", ("wds",)), ("ffcv_rerun", ("wds", "ffcv"))):
        c0, busy0, own0, t0 = cpu.totals(), machine_busy_seconds(), own_seconds(), time.perf_counter()
        stats = run(spark, ShardsConfig(samples=str(samples), out=str(out), format=fmt, shard_size=cfg.shard_size,
                                        max_side=cfg.max_side, quality=cfg.quality))
        dt, c1, busy1, own1 = time.perf_counter() - t0, cpu.totals(), machine_busy_seconds(), own_seconds()
        used = sum(c1.values()) - sum(c0.values()) + own1 - own0
        res[name] = {"seconds": dt, "cpu_s": used, "others_cpu_s": max(0.0, busy1 - busy0 - used),
                     "samples": stats["samples"], "rejected": sum(stats["rejected_samples"].values()),
                     "written": stats["shards_written"]}
        print(f"[shards-bench] spark {name}: {dt:.1f}s, CPU {used:.1f}s (JVM {c1['jvm'] - c0['jvm']:.1f}, Python "
              f"workers {c1['python'] - c0['python']:.1f}, driver {own1 - own0:.1f})", flush=True)
    cpu.close()
    spark.stop()
    return res


def shard_hashes(out: Path) -> dict[str, tuple[str, bytes, list[int]]]:
    """image_id -> (sha256, jpeg, labels) of every sample in the WebDataset shards."""
    from pipeline.wds import iter_shard

    res = {}
    for s in json.loads((out / "shards.json").read_text())["shards"]:
        for _, parts in iter_shard(out / s["name"]):
            meta = json.loads(parts["json"])
            res[meta["image_id"]] = (hashlib.sha256(parts["jpg"]).hexdigest(), parts["jpg"], meta["labels"])
    return res


def imagefolder_tree(shards: dict, classes: list[str], root: Path) -> Path:
    """The shards' own JPEG bytes as ROOT/<category>/<image_id>.jpg: ImageFolder reads what WDS reads."""
    shutil.rmtree(root, ignore_errors=True)
    for image_id, (_, jpg, labels) in shards.items():
        d = root / classes[labels[0]]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{image_id}.jpg").write_bytes(jpg)
    return root


# --- (b) loading -------------------------------------------------------------------------------

def imagefolder_loader(root: Path, batch_size: int, workers: int, size: int, seed: int):
    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    return torch.utils.data.DataLoader(ImageFolder(str(root), transform=tf), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True,
                                       generator=torch.Generator().manual_seed(seed))


def tree_cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children: the DataLoader workers are joined at the
    end of every epoch, so this counts them exactly, with no sampling thread taking CPU meanwhile."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_loader(loader, epochs: int) -> dict:
    """One warm-up epoch, then `epochs` timed ones (worker start-up per epoch included: it is real)."""
    times, n, cpu_s, others = [], 0, 0.0, 0.0
    for e in range(epochs + 1):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(e)
        c0, busy0, t0 = tree_cpu_seconds(), machine_busy_seconds(), time.perf_counter()
        k = 0
        for batch in loader:
            k += batch[0].shape[0]
        dt, c1, busy1 = time.perf_counter() - t0, tree_cpu_seconds(), machine_busy_seconds()
        if e > 0:
            times.append(dt)
            n, cpu_s, others = n + k, cpu_s + c1 - c0, others + max(0.0, busy1 - busy0 - (c1 - c0))
    return {"images": n, "seconds": sum(times), "epoch_s": times, "cpu_s": cpu_s, "others_cpu_s": others,
            "img_per_s": n / sum(times), "img_per_cpu_s": n / cpu_s if cpu_s else float("nan")}


def run_loaders(cfg: ShardsBenchConfig, shards: Path, folder: Path) -> dict:
    from trainer.data import make_loader

    res = {}
    for w in (int(x) for x in cfg.workers):
        makers = {
            "ImageFolder": lambda: imagefolder_loader(folder, cfg.batch_size, w, cfg.size, cfg.seed),
            "WebDataset": lambda: make_loader("wds", shards, batch_size=cfg.batch_size, rank=0, world_size=1,
                                              num_workers=w, train=True, size=cfg.size, seed=cfg.seed),
            "FFCV": lambda: make_loader("ffcv", shards, batch_size=cfg.batch_size, rank=0, world_size=1,
                                        num_workers=w, train=True, size=cfg.size, seed=cfg.seed),
        }
        for name, make in makers.items():
            _LOADERS_ALIVE.append(make())
            r = res[f"{name}/{w}"] = {"loader": name, "workers": w, **time_loader(_LOADERS_ALIVE[-1], cfg.epochs)}
            print(f"[shards-bench] {name} {w} worker(s): {r['img_per_s']:.0f} img/s, {r['img_per_cpu_s']:.0f} img per "
                  f"CPU s (epochs {', '.join(f'{t:.1f}' for t in r['epoch_s'])} s)", flush=True)
    return res


# --- report ------------------------------------------------------------------------------------

def print_tables(a: dict, b: dict) -> dict:
    n = a["images"]
    print(f"\n(a) shard writing, {n} images ({a['source']}) -> shorter side {a['max_side']}, JPEG q{a['quality']}"
          + (f"; Spark conf {', '.join(a['spark_conf'])}" if a["spark_conf"] else ""))
    head = f"{'writer':<34}{'wall s':>8}{'cores':>7}{'img/s':>9}{'img/s/core':>12}{'CPU s':>8}{'img/CPU s':>11}"
    print(head + "\n" + "-" * len(head))
    rows = [("Pillow loop (1 process)", a["plain"]["seconds"], 1, a["plain"]["cpu_s"]),
            ("prepare_image (1 process)", a["prepare"]["seconds"], 1, a["prepare"]["cpu_s"]),
            (f"shards job wds, Spark {MASTER}", a["spark"]["wds"]["seconds"], SPARK_CORES, a["spark"]["wds"]["cpu_s"]),
            ("  + session start-up", a["spark"]["wds"]["seconds"] + a["spark"]["session_s"], SPARK_CORES, None),
            ("  rerun adding FFCV .beton", a["spark"]["ffcv_rerun"]["seconds"], SPARK_CORES,
             a["spark"]["ffcv_rerun"]["cpu_s"])]
    for name, s, cores, cpu in rows:
        print(f"{name:<34}{s:>8.1f}{cores:>7}{n / s:>9.1f}{n / s / cores:>12.1f}"
              + (f"{cpu:>8.1f}{n / cpu:>11.1f}" if cpu else f"{'-':>8}{'-':>11}"))
    plain_pc = n / a["plain"]["seconds"]
    spark_pc = n / a["spark"]["wds"]["seconds"] / SPARK_CORES
    summary = {"write_overhead_pct": 100 * (plain_pc / spark_pc - 1),
               "write_overhead_cpu_pct": 100 * (a["spark"]["wds"]["cpu_s"] / a["plain"]["cpu_s"] - 1),
               "prepare_vs_plain_pct": 100 * (a["prepare"]["seconds"] / a["plain"]["seconds"] - 1)}
    print(f"Spark overhead per core vs the Pillow loop: {summary['write_overhead_pct']:+.0f}% wall-clock per core, "
          f"{summary['write_overhead_cpu_pct']:+.0f}% CPU seconds (target <= +15%); prepare_image vs the loop: "
          f"{summary['prepare_vs_plain_pct']:+.0f}%; shard JPEGs byte-identical to the loop's: {a['identical']}/{n}")

    print(f"\n(b) loaders: decode + RandomResizedCrop({a['size']}) + flip, batch {a['batch_size']}, "
          f"{a['epochs']} epochs after a warm-up epoch")
    head = (f"{'loader':<13}{'workers':>8}{'img/s':>9}{'img/s/worker':>14}{'x IF':>7}{'CPU s':>8}{'img/CPU s':>11}"
            f"{'x IF':>7}{'others CPU s':>14}")
    print(head + "\n" + "-" * len(head))
    order = ["ImageFolder", "WebDataset", "FFCV"]
    for key, r in sorted(b.items(), key=lambda kv: (kv[1]["workers"], order.index(kv[1]["loader"]))):
        ref = b[f"ImageFolder/{r['workers']}"]
        r["ratio"] = r["img_per_s"] / ref["img_per_s"]
        r["ratio_cpu"] = r["img_per_cpu_s"] / ref["img_per_cpu_s"]
        print(f"{r['loader']:<13}{r['workers']:>8}{r['img_per_s']:>9.0f}{r['img_per_s'] / r['workers']:>14.0f}"
              f"{r['ratio']:>7.2f}{r['cpu_s']:>8.1f}{r['img_per_cpu_s']:>11.0f}{r['ratio_cpu']:>7.2f}"
              f"{r['others_cpu_s']:>14.1f}")
    summary["loaders"] = {k: {"x_imagefolder": r["ratio"], "x_imagefolder_cpu": r["ratio_cpu"]} for k, r in b.items()}
    print("x IF: ratio to ImageFolder with the same workers (targets: FFCV >= 3, WebDataset >= 1); per worker and "
          "per CPU second. 'others CPU s': CPU other processes used meanwhile (a busy machine skews the figures).")
    return summary


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ShardsBenchConfig, argv, __doc__.splitlines()[0])
    work = Path(cfg.workdir).resolve()
    rows = source_jpegs(cfg)
    paths = [p for _, p, _ in rows]
    classes = write_samples_table(rows, work / f"shards-samples-{cfg.images}")
    for p in paths:  # page cache warm for every contender
        p.read_bytes()
    print(f"[shards-bench] {len(rows)} JPEGs, {len(classes)} classes; load average {os.getloadavg()}", flush=True)

    plain_s, plain_cpu, plain_sha = plain_loop(paths, cfg.max_side, cfg.quality)
    prep_s, prep_cpu = prepare_loop(paths, cfg.max_side, cfg.quality)
    print(f"[shards-bench] Pillow loop {plain_s:.1f}s, prepare_image {prep_s:.1f}s", flush=True)
    out = work / f"shards-{cfg.images}"
    spark = spark_shards(cfg, work / f"shards-samples-{cfg.images}", out)
    if spark["wds"]["rejected"] or spark["wds"]["samples"] != len(rows):
        raise SystemExit(f"[shards-bench] the shards job kept {spark['wds']['samples']} of {len(rows)} images")
    shards = shard_hashes(out)
    identical = sum(shards[i][0] == plain_sha[str(p)] for i, p, _ in rows)
    folder = imagefolder_tree(shards, classes, work / f"imagefolder-{cfg.images}")
    del shards
    a = {"images": len(rows), "source": f"openclipart, {cfg.source_side} px shorter side", "max_side": cfg.max_side,
         "quality": cfg.quality, "size": cfg.size, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
         "plain": {"seconds": plain_s, "cpu_s": plain_cpu}, "prepare": {"seconds": prep_s, "cpu_s": prep_cpu},
         "spark": spark, "identical": identical, "spark_conf": list(cfg.spark_conf)}
    b = run_loaders(cfg, out, folder)
    summary = print_tables(a, b)
    result = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
              "writing": a, "loaders": b, "summary": summary}
    path = work / f"shards-results-{cfg.images}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    print(f"[shards-bench] results -> {path}; load average {os.getloadavg()}")
    return result


if __name__ == "__main__":
    main()
