"""Shard writing, bytes on disk, loading with a sample index and resuming, on openclipart-derived JPEGs.

    python -m bench.shards_bench [--sizes 2000,20000] [--samples 20000] [--workdir build/bench] \
        [--epochs 2] [--workers 1,2] [--resume-workers 0,2]     # smoke: --sizes 60,200 --samples 2000 --epochs 1

(1) Writing: jobs/shards.py (Spark local[2], --format wds) on a labeled table of N images at two
sizes N, against a single-process Pillow loop doing the same work (open, RGB, shorter side to 320
with LANCZOS, JPEG q90) over the same files. CPU seconds of the job's whole process tree (JVM,
Python workers, driver); the per-image slope (cpu(N2) - cpu(N1)) / (N2 - N1) of job and loop
separates the job's fixed cost out (target: slope ratio <= 1.15). A rerun adding the FFCV
.beton is timed apart. Beyond the distinct usable PNGs, files repeat under distinct image ids.
(2) Bytes: the unique-image shards (tars, .beton) against the old layout, which stored every
sample's JPEG: estimated from a real sample index (jobs/resample.py --shards, --samples M) as the
sum over its samples of the stored JPEG size + 1024 bytes of tar headers and json per sample.
(3) Loaders with that sample index: decode + RandomResizedCrop(224) + flip, batch 64, 1 and 2
workers: the WebDataset and FFCV readers against torchvision ImageFolder over the shards' own
JPEG bytes (targets: FFCV >= 3x, WebDataset >= 1x per core); how often one image lands twice in
a WebDataset/FFCV batch, against random permutations of the same multiset.
(4) Resume: time to the first batch at 90% of an epoch against at batch 0 (target <= 1.5x).
Source JPEGs (480 px shorter side, class = openclipart category) are made once under
WORKDIR/jpegs-*; shard sets go to WORKDIR/shards-<N>, results to WORKDIR/shards-results-<sizes>.json.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.pipeline_bench import machine_busy_seconds, own_seconds
from bench.shards_bench_lib import (TAR_PAIR_OVERHEAD, SelfTimedSampler, batch_repeats, busy_flag, imagefolder_loader,
                                    plain_loop, read_back, resume_times, rows_for, source_jpegs, time_loader,
                                    write_labeled)
from jobs.lib.config import parse_config
from schemas.shard_set import read_shard_set_meta

MASTER, SPARK_CORES = "local[2]", 2
_LOADERS_ALIVE = []  # numba's finalizers print KeyErrors when a used FFCV Loader is collected


@dataclass(frozen=True)
class ShardsBenchConfig:
    sizes: tuple[str, ...] = field(default=("2000", "20000"), metadata={"help": "images of the writing runs"})
    samples: int = field(default=20000, metadata={"help": "M of the sample index (bytes, loaders, resume)"})
    workdir: str = field(default="build/bench", metadata={"help": "JPEG cache and outputs"})
    source_side: int = field(default=480, metadata={"help": "shorter side of the source JPEGs"})
    max_side: int = field(default=320, metadata={"help": "shards job --max-side (and the plain loop's)"})
    quality: int = field(default=90, metadata={"help": "JPEG quality of the shards and the plain loop"})
    shard_size: int = field(default=250, metadata={"help": "images per tar shard (lowered to give every worker "
                                                           "two shards of the largest set)"})
    alpha: float = field(default=0.7, metadata={"help": "resample --alpha"})
    strategy: str = field(default="importance", metadata={"help": "resample --strategy"})
    index_epochs: int = field(default=1, metadata={"help": "resample --epochs (loader epoch e reads e mod E)"})
    batch_size: int = field(default=64, metadata={"help": "loader batch size"})
    size: int = field(default=224, metadata={"help": "RandomResizedCrop output side"})
    epochs: int = field(default=2, metadata={"help": "timed loader epochs (after a few warm-up batches)"})
    workers: tuple[str, ...] = field(default=("1", "2"), metadata={"help": "loader worker counts"})
    resume_workers: tuple[str, ...] = field(default=("0", "2"), metadata={"help": "WebDataset workers of (4)"})
    seed: int = field(default=0, metadata={"help": "image selection, draw and loader seed"})
    spark_conf: tuple[str, ...] = field(default=(), metadata={"help": "extra key=value Spark settings"})

    def __post_init__(self):
        if len(self.sizes) < 2 or not all(s.isdigit() for s in self.sizes) or len(set(self.n_sizes)) < 2 \
                or self.n_sizes[0] < 1:
            raise ValueError(f"--sizes takes two or more distinct positive image counts, got {self.sizes}")
        if self.samples < 2 * self.batch_size:
            raise ValueError(f"--samples must be >= 2 batches ({2 * self.batch_size}), got {self.samples}")
        if self.epochs < 1 or self.index_epochs < 1:
            raise ValueError("--epochs and --index-epochs must be >= 1")
        if not self.workers or not all(w.isdigit() and int(w) > 0 for w in self.workers) or \
                not all(w.isdigit() for w in self.resume_workers):
            raise ValueError("--workers must be positive integers, --resume-workers non-negative ones")
        if any("=" not in kv for kv in self.spark_conf):
            raise ValueError(f"--spark-conf takes key=value pairs, got {self.spark_conf}")

    @property
    def n_sizes(self) -> list[int]:
        return sorted({int(s) for s in self.sizes})

    @property
    def shard_images(self) -> int:
        most = max(int(w) for w in (*self.workers, *self.resume_workers, "1"))
        return max(1, min(self.shard_size, self.n_sizes[-1] // (2 * most)))


# --- (1) writing -------------------------------------------------------------------------------

def start_spark(cfg: ShardsBenchConfig):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from jobs.lib.session import get_session

    t0 = time.perf_counter()
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "2g",
            **dict(kv.split("=", 1) for kv in cfg.spark_conf)}
    spark = get_session("shards-bench", MASTER, conf)
    spark.range(1).count()
    return spark, time.perf_counter() - t0


def shards_job(cfg: ShardsBenchConfig, spark, cpu: SelfTimedSampler, labeled: Path, out: Path, fmt: tuple) -> dict:
    """jobs/shards.py run() with the CPU seconds of the whole process tree (the driver's without
    the sampler's own /proc readings)."""
    from jobs.shards import ShardsConfig, run

    c0, s0, busy0, own0, t0 = cpu.totals(), cpu.overhead_s, machine_busy_seconds(), own_seconds(), time.perf_counter()
    stats = run(spark, ShardsConfig(labeled=str(labeled), out=str(out), format=fmt, shard_size=cfg.shard_images,
                                    max_side=cfg.max_side, quality=cfg.quality))
    dt, c1, s1 = time.perf_counter() - t0, cpu.totals(), cpu.overhead_s
    busy1, own1 = machine_busy_seconds(), own_seconds()
    parts = {"jvm_cpu_s": c1["jvm"] - c0["jvm"], "python_cpu_s": c1["python"] - c0["python"],
             "driver_cpu_s": own1 - own0 - (s1 - s0)}
    used = sum(parts.values())
    return {"seconds": dt, "cpu_s": used, **parts, "sampler_cpu_s": s1 - s0,
            "others_cpu_s": max(0.0, busy1 - busy0 - used - (s1 - s0)),
            "images": stats["images"], "rejected": sum(stats["rejected_images"].values()),
            "written": stats["shards_written"], "skipped": stats["shards_skipped"]}


def section_write(cfg: ShardsBenchConfig, work: Path, base: list, classes: list[str], spark, cpu) -> dict:
    warm = rows_for(base, min(50, cfg.n_sizes[0]))  # Python workers started, JVM code paths compiled
    write_labeled(warm, classes, work / "shards-labeled-warmup")
    shutil.rmtree(work / "shards-warmup", ignore_errors=True)
    res = {"warmup": shards_job(cfg, spark, cpu, work / "shards-labeled-warmup", work / "shards-warmup", ("wds",))}
    for n in cfg.n_sizes:
        rows = rows_for(base, n)
        paths = [p for _, p, _ in rows]
        for p in set(paths):  # page cache warm for both contenders
            p.read_bytes()
        loop = plain_loop(paths, cfg.max_side, cfg.quality)
        labeled, out = work / f"shards-labeled-{n}", work / f"shards-{n}"
        tail_rule = write_labeled(rows, classes, labeled)
        shutil.rmtree(out, ignore_errors=True)
        job = shards_job(cfg, spark, cpu, labeled, out, ("wds",))
        if job["rejected"] or job["images"] != n:
            raise SystemExit(f"[shards-bench] the shards job stored {job['images']} of {n} images")
        ffcv = shards_job(cfg, spark, cpu, labeled, out, ("wds", "ffcv"))
        res[n] = {"loop": loop, "job": job, "ffcv_rerun": ffcv, "tail_rule": tail_rule,
                  "distinct_files": len(set(paths))}
        print(f"[shards-bench] {n} images: loop {loop['seconds']:.1f}s (CPU {loop['cpu_s']:.1f}s); job "
              f"{job['seconds']:.1f}s, CPU {job['cpu_s']:.1f}s (JVM {job['jvm_cpu_s']:.1f}, Python workers "
              f"{job['python_cpu_s']:.1f}, driver {job['driver_cpu_s']:.1f}); FFCV rerun {ffcv['seconds']:.1f}s",
              flush=True)
    lo, hi = cfg.n_sizes[0], cfg.n_sizes[-1]
    for side in ("job", "loop"):
        for key in ("cpu_s", "seconds"):
            slope = (res[hi][side][key] - res[lo][side][key]) / (hi - lo)
            res[f"{side}_{key}_per_image"] = slope
            res[f"{side}_{key}_fixed"] = res[lo][side][key] - slope * lo
    res["slope_ratio"] = res["job_cpu_s_per_image"] / res["loop_cpu_s_per_image"]
    return res


def build_index(cfg: ShardsBenchConfig, spark, labeled: Path, shards: Path, out: Path) -> dict:
    from jobs.resample import ResampleConfig, run

    t0 = time.perf_counter()
    stats = run(spark, ResampleConfig(labeled=str(labeled), out=str(out), num_samples=cfg.samples, alpha=cfg.alpha,
                                      strategy=cfg.strategy, seed=cfg.seed, shards=str(shards),
                                      epochs=cfg.index_epochs))
    return {"seconds": time.perf_counter() - t0, "splits": stats["splits"], "index": stats["index"]}


# --- (2) bytes, (3) loaders, (4) resume --------------------------------------------------------

def sample_index(shards: Path, samples: Path):
    from trainer.data.sample_index import SampleIndex
    from trainer.data.shard_set import load_shard_set

    return SampleIndex(load_shard_set(shards), samples)


def section_bytes(shards: Path, samples: Path, back: dict) -> dict:
    meta = read_shard_set_meta(shards).to_dict()
    images, _ = sample_index(shards, samples).epoch_order(0)
    size = back["size"]
    beton = shards / "images.beton"
    res = {"unique_images": len(size), "samples": len(images), "distinct_in_samples": len(np.unique(images)),
           "tar_bytes": sum(s["bytes"] for s in meta["shards"]), "tar_files": len(meta["shards"]),
           "beton_bytes": beton.stat().st_size if beton.is_file() else None,
           "unique_jpeg_bytes": int(size.sum()), "sample_jpeg_bytes": int(size[images].sum())}
    res["old_tar_bytes_est"] = res["sample_jpeg_bytes"] + TAR_PAIR_OVERHEAD * len(images)
    res["unique_tar_bytes_formula"] = res["unique_jpeg_bytes"] + TAR_PAIR_OVERHEAD * len(size)
    if res["beton_bytes"]:  # the old .beton held every sample's JPEG: add the repeats' (FFCV's page padding once)
        res["old_beton_bytes_est"] = res["beton_bytes"] + res["sample_jpeg_bytes"] - res["unique_jpeg_bytes"]
    res["ratio_tar"] = res["old_tar_bytes_est"] / res["tar_bytes"]
    return res


def loader_kw(cfg: ShardsBenchConfig, workers: int, samples: Path) -> dict:
    return dict(batch_size=cfg.batch_size, rank=0, world_size=1, num_workers=workers, train=True, size=cfg.size,
                seed=cfg.seed, sample_index=str(samples))


def section_loaders(cfg: ShardsBenchConfig, shards: Path, samples: Path, folder: Path) -> tuple[dict, dict]:
    """(3) and (4). Every forking loader runs before the first FFCV Loader: forking a process whose
    numba TBB pool has run warns (and may break the children's threads); a trainer uses one format."""
    from trainer.data import make_loader

    index, res, resume = sample_index(shards, samples), {}, {}
    makers = {"ImageFolder": lambda w: imagefolder_loader(folder, cfg.batch_size, w, cfg.size, cfg.seed),
              "WebDataset": lambda w: make_loader("wds", shards, **loader_kw(cfg, w, samples)),
              "FFCV": lambda w: make_loader("ffcv", shards, **loader_kw(cfg, w, samples))}
    for name, make in makers.items():
        if name == "FFCV":  # (4) of the WebDataset reader first
            for w in (int(x) for x in cfg.resume_workers):
                resume[f"WebDataset/{w}"] = {"loader": "WebDataset", "workers": w, **resume_times(make_loader(
                    "wds", shards, **loader_kw(cfg, w, samples)))}
        for w in (int(x) for x in cfg.workers):
            _LOADERS_ALIVE.append(make(w))
            r = {"loader": name, "workers": w, **time_loader(_LOADERS_ALIVE[-1], cfg.epochs)}
            positions = r.pop("positions")
            if positions:
                r["repeats"] = batch_repeats(index, positions)
            res[f"{name}/{w}"] = r
            print(f"[shards-bench] {name} {w} worker(s): {r['img_per_s']:.0f} img/s, {r['img_per_cpu_s']:.0f} img per "
                  f"CPU s (epochs {', '.join(f'{t:.1f}' for t in r['epoch_s'])} s)", flush=True)
    w = max(int(x) for x in cfg.workers)
    _LOADERS_ALIVE.append(make_loader("ffcv", shards, **loader_kw(cfg, w, samples)))
    resume[f"FFCV/{w}"] = {"loader": "FFCV", "workers": w, **resume_times(_LOADERS_ALIVE[-1])}
    for k, r in resume.items():
        print(f"[shards-bench] resume {k}: first batch {r['first_batch_s_0']:.3f}s at 0, {r['first_batch_s_90']:.3f}s "
              f"at batch {r['start_90']}", flush=True)
    return res, resume


# --- report ------------------------------------------------------------------------------------

def print_write(cfg: ShardsBenchConfig, a: dict, session_s: float) -> None:
    print(f"\n(1) shard writing -> shorter side {cfg.max_side}, JPEG q{cfg.quality}, {cfg.shard_images} images per "
          f"shard, Spark {MASTER}" + (f"; Spark conf {', '.join(cfg.spark_conf)}" if cfg.spark_conf else ""))
    head = (f"{'images':>8}{'files':>7}{'loop s':>8}{'loop CPU s':>11}{'ms/img':>8}{'job s':>8}{'job CPU s':>10}"
            f"{'JVM':>7}{'Py':>7}{'driver':>7}{'ms/img':>8}{'x loop':>7}{'+FFCV s':>9}")
    print(head + "\n" + "-" * len(head))
    for n in cfg.n_sizes:
        lp, jb = a[n]["loop"], a[n]["job"]
        print(f"{n:>8}{a[n]['distinct_files']:>7}{lp['seconds']:>8.1f}{lp['cpu_s']:>11.1f}{1e3 * lp['cpu_s'] / n:>8.2f}"
              f"{jb['seconds']:>8.1f}{jb['cpu_s']:>10.1f}{jb['jvm_cpu_s']:>7.1f}{jb['python_cpu_s']:>7.1f}"
              f"{jb['driver_cpu_s']:>7.1f}{1e3 * jb['cpu_s'] / n:>8.2f}{jb['cpu_s'] / lp['cpu_s']:>7.2f}"
              f"{a[n]['ffcv_rerun']['seconds']:>9.1f}")
        for what, r in (("loop", lp), ("job", jb), ("FFCV rerun", a[n]["ffcv_rerun"])):
            flag = busy_flag(r["others_cpu_s"], r["seconds"])
            if flag:
                print(f"{'':>8}{what} at {n}:{flag}")
    lo, hi = cfg.n_sizes[0], cfg.n_sizes[-1]
    print(f"per-image slope between {lo} and {hi} images: job {1e3 * a['job_cpu_s_per_image']:.2f} CPU ms/img "
          f"({1e3 * a['job_seconds_per_image'] * SPARK_CORES:.2f} wall ms x {SPARK_CORES} cores), loop "
          f"{1e3 * a['loop_cpu_s_per_image']:.2f} CPU ms/img: ratio {a['slope_ratio']:.2f} (target <= 1.15)")
    print(f"fixed cost: job {a['job_cpu_s_fixed']:.1f} CPU s ({a['job_seconds_fixed']:.1f} s wall), loop "
          f"{a['loop_cpu_s_fixed']:.1f} CPU s; not in the job's figures: session start-up {session_s:.1f} s, a warm-up "
          f"job on {a['warmup']['images']} images {a['warmup']['seconds']:.1f} s. +FFCV s: the rerun that skips the "
          f"unchanged tars and writes the .beton. Labeled table: {a[hi]['tail_rule']}")


def print_bytes(cfg: ShardsBenchConfig, b: dict, idx: dict) -> None:
    splits = ", ".join(f"{k} {v['samples']} samples of {v['unique_images']} images" for k, v in idx["splits"].items())
    print(f"\n(2) bytes on disk: {b['unique_images']} stored images vs the old per-sample layout of {b['samples']} "
          f"samples ({b['distinct_in_samples']} distinct images; resample --strategy {cfg.strategy} --alpha "
          f"{cfg.alpha}: {splits})")
    head = f"{'layout':<48}{'bytes':>14}{'MB':>9}{'x new':>7}"
    print(head + "\n" + "-" * len(head))
    rows = [("unique-image tars (measured)", b["tar_bytes"]),
            ("  same, as JPEG + 1024 B per image", b["unique_tar_bytes_formula"]),
            ("old tars: JPEG + 1024 B per sample (estimate)", b["old_tar_bytes_est"])]
    if b["beton_bytes"]:
        rows += [("unique-image .beton (measured)", b["beton_bytes"]),
                 ("old .beton: + the repeated samples' JPEGs (est.)", b["old_beton_bytes_est"])]
    for name, v in rows:
        ref = b["beton_bytes"] if "beton" in name else b["tar_bytes"]
        print(f"{name:<48}{v:>14,.0f}{v / 1e6:>9.1f}{v / ref:>7.2f}")
    print(f"the old layout would take {b['ratio_tar']:.2f}x the tar bytes (tar padding to 512 B not counted in "
          f"the estimate: it understates the old layout; a small .beton is mostly FFCV's 8 MiB pages)")


def print_loaders(cfg: ShardsBenchConfig, c: dict, d: dict) -> dict:
    print(f"\n(3) loaders with a sample index of {cfg.samples} samples: decode + RandomResizedCrop({cfg.size}) + flip, "
          f"batch {cfg.batch_size}, {cfg.epochs} epoch(s) after warm-up batches")
    head = (f"{'loader':<13}{'workers':>8}{'img/epoch':>10}{'img/s':>9}{'img/s/worker':>14}{'x IF':>7}{'CPU s':>8}"
            f"{'img/CPU s':>11}{'x IF':>7}")
    print(head + "\n" + "-" * len(head))
    order, out = ["ImageFolder", "WebDataset", "FFCV"], {}
    for key, r in sorted(c.items(), key=lambda kv: (kv[1]["workers"], order.index(kv[1]["loader"]))):
        ref = c[f"ImageFolder/{r['workers']}"]
        r["ratio"], r["ratio_cpu"] = r["img_per_s"] / ref["img_per_s"], r["img_per_cpu_s"] / ref["img_per_cpu_s"]
        out[key] = {"x_imagefolder": r["ratio"], "x_imagefolder_cpu": r["ratio_cpu"]}
        print(f"{r['loader']:<13}{r['workers']:>8}{r['images'] // cfg.epochs:>10}{r['img_per_s']:>9.0f}"
              f"{r['img_per_s'] / r['workers']:>14.0f}{r['ratio']:>7.2f}{r['cpu_s']:>8.1f}{r['img_per_cpu_s']:>11.0f}"
              f"{r['ratio_cpu']:>7.2f}{busy_flag(r['others_cpu_s'], r['seconds'])}")
    print("x IF: ratio to ImageFolder (every stored image once per epoch) with the same workers, per worker and per "
          "CPU second (targets: FFCV >= 3, WebDataset >= 1)")
    print(f"\nrepeated images within a batch (batch {cfg.batch_size}) vs random permutations of the same samples")
    head = (f"{'loader':<13}{'workers':>8}{'batches':>9}{'frac w/ repeat':>16}{'ideal':>8}{'pairs/batch':>13}"
            f"{'ideal':>8}")
    print(head + "\n" + "-" * len(head))
    for key, r in c.items():
        if "repeats" in r:
            g, i = r["repeats"]["loader"], r["repeats"]["ideal"]
            print(f"{r['loader']:<13}{r['workers']:>8}{g['batches']:>9}{g['frac_with_repeat']:>16.3f}"
                  f"{i['frac_with_repeat']:>8.3f}{g['pairs_per_batch']:>13.3f}{i['pairs_per_batch']:>8.3f}")
            out[key].update(repeat_frac=g["frac_with_repeat"], repeat_frac_ideal=i["frac_with_repeat"],
                            repeat_pairs=g["pairs_per_batch"], repeat_pairs_ideal=i["pairs_per_batch"])
    print("ideal: the epoch's samples in 5 seeded random orders, cut into as many batches")
    print("\n(4) resume: time from iter() to the first batch, median of 7, at batch 0 vs at 90% of epoch 0")
    head = f"{'loader':<13}{'workers':>8}{'batches':>9}{'at 0 s':>9}{'at 90% s':>10}{'x':>7}{'decoded':>9}"
    print(head + "\n" + "-" * len(head))
    for key, r in d.items():
        dec = f"{r['decoded_0']}/{r['decoded_90']}" if r["loader"] == "WebDataset" and r["workers"] == 0 else "-"
        print(f"{r['loader']:<13}{r['workers']:>8}{r['batches']:>9}{r['first_batch_s_0']:>9.3f}"
              f"{r['first_batch_s_90']:>10.3f}{r['ratio']:>7.2f}{dec:>9}")
        out[f"resume {key}"] = r["ratio"]
    print("x: at 90% / at 0 (target <= 1.5); decoded: images this process decoded before the first batch (0 workers)")
    return out


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ShardsBenchConfig, argv, __doc__.splitlines()[0])
    work = Path(cfg.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    big = cfg.n_sizes[-1]
    base = source_jpegs(work, big, cfg.source_side, cfg.seed)
    classes = sorted({c for _, _, c in base})
    print(f"[shards-bench] {len(base)} distinct source JPEGs, {len(classes)} classes; sizes {cfg.n_sizes}; load "
          f"average {os.getloadavg()}", flush=True)
    spark, session_s = start_spark(cfg)
    cpu = SelfTimedSampler()
    a = section_write(cfg, work, base, classes, spark, cpu)
    shards, samples = work / f"shards-{big}", work / f"shards-samples-{big}-m{cfg.samples}"
    idx = build_index(cfg, spark, work / f"shards-labeled-{big}", shards, samples)
    cpu.close()
    spark.stop()
    folder = work / f"imagefolder-{big}"
    back = read_back(shards, classes, folder)
    path_of = {i: str(p) for i, p, _ in rows_for(base, big)}
    sha = a[big]["loop"]["sha"]
    a["identical"] = sum(s == sha[path_of[i]] for i, s in zip(back["image_id"], back["sha"]))
    for n in cfg.n_sizes:
        del a[n]["loop"]["sha"]
    b = section_bytes(shards, samples, back)
    c, d = section_loaders(cfg, shards, samples, folder)
    print_write(cfg, a, session_s)
    print(f"shard JPEGs byte-identical to the loop's: {a['identical']}/{big}")
    print_bytes(cfg, b, idx)
    summary = {"slope_ratio": a["slope_ratio"], "job_fixed_cpu_s": a["job_cpu_s_fixed"], "bytes_ratio": b["ratio_tar"],
               **print_loaders(cfg, c, d)}
    result = {"config": asdict(cfg), "shard_images": cfg.shard_images, "session_s": session_s,
              "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
              "writing": a, "index": idx, "bytes": b, "loaders": c, "resume": d, "summary": summary}
    path = work / f"shards-results-{'-'.join(map(str, cfg.n_sizes))}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"[shards-bench] results -> {path}; load average {os.getloadavg()}")
    return result


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    # FFCV loaders stopped after their first batch (4) leave threads that std::terminate the
    # process during interpreter teardown (exit 134 after the results are written): skip it
    os._exit(0)
