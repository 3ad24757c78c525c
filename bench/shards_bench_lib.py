"""Helpers of bench/shards_bench.py: source JPEGs, the labeled table, the plain Pillow loop, reading
the written shards back, loader timing, repeated images within batches, and resume timing."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bench.pipeline_bench import CpuSampler, machine_busy_seconds, own_seconds
from schemas.shard_set import read_shard_set_meta

OPENCLIPART = Path("/usr/share/openclipart/png")
TAR_PAIR_OVERHEAD = 1024  # bytes per (jpg, json) member pair of the old layout: two headers + the json


def busy_flag(others_cpu_s: float, wall_s: float) -> str:
    """A warning when other processes used more than 10% of the machine while we measured."""
    if others_cpu_s > 0.1 * wall_s * (os.cpu_count() or 1):
        return f"  <- other processes used {others_cpu_s:.1f} CPU s meanwhile: not an idle machine, rerun to record"
    return ""


class SelfTimedSampler(CpuSampler):
    """CpuSampler that also counts the CPU its own /proc readings take (`overhead_s`), so that the
    bench's measuring is not charged to the driver it measures."""

    def __init__(self, period: float = 0.25):
        self.overhead_s = 0.0
        super().__init__(period)

    def _sample(self) -> None:
        t0 = time.thread_time()
        super()._sample()
        self.overhead_s += time.thread_time() - t0


# --- inputs ------------------------------------------------------------------------------------

def on_white(im: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white (clipart is mostly transparent)."""
    im = im.convert("RGBA")
    white = Image.new("RGB", im.size, (255, 255, 255))
    white.paste(im, mask=im.getchannel("A"))
    return white


MAX_SOURCE_PIXELS = 16_000_000


def source_jpegs(workdir: Path, need: int, side: int, seed: int) -> list[tuple[str, Path, str]]:
    """(image_id, path, category) of up to `need` usable openclipart PNGs as RGB JPEGs (shorter side
    `side`, q95) under WORKDIR/jpegs-<side>-s<seed>, made once and extended on demand (list.json last)."""
    root = workdir / f"jpegs-{side}-s{seed}"
    listing = root / "list.json"
    state = json.loads(listing.read_text()) if listing.is_file() else {"rows": [], "next": 0, "exhausted": False}
    if len(state["rows"]) < need and not state["exhausted"]:
        t0, made = time.perf_counter(), 0
        pngs = sorted(OPENCLIPART.rglob("*.png"))
        order = np.random.default_rng(seed).permutation(len(pngs))
        k = state["next"]
        while len(state["rows"]) < need and k < len(order):
            p = pngs[order[k]]
            k += 1
            try:
                with Image.open(p) as im:
                    w, h = im.size
                    # banners and specks are not photos; giants (openclipart has 600M-pixel PNGs,
                    # refused by Pillow's bomb guard) would make the source set, not the bench, slow
                    if max(w, h) > 3 * min(w, h) or min(w, h) < 16 or w * h > MAX_SOURCE_PIXELS:
                        continue
                    rgb = on_white(im)
            except (Image.DecompressionBombError, OSError):
                continue
            s = side / min(w, h)
            rgb = rgb.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
            rel = p.relative_to(OPENCLIPART)
            category, image_id = rel.parts[0], "__".join(rel.with_suffix("").parts)
            out = root / category / f"{image_id}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            rgb.save(out, "JPEG", quality=95)
            state["rows"].append((image_id, str(out.resolve()), category))
            made += 1
        state["next"], state["exhausted"] = k, k >= len(order)
        root.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps(state))
        print(f"[shards-bench] made {made} source JPEGs in {root} in {time.perf_counter() - t0:.0f}s", flush=True)
    if not state["rows"]:
        raise SystemExit(f"[shards-bench] no usable openclipart PNGs under {OPENCLIPART}")
    return [(i, Path(p), c) for i, p, c in state["rows"][:need]]


def rows_for(base: list, n: int) -> list[tuple[str, Path, str]]:
    """n rows; beyond the distinct files, files repeat under distinct image ids (<id>__copy<k>)."""
    u = len(base)
    return [(base[k % u][0] if k < u else f"{base[k % u][0]}__copy{k // u}", base[k % u][1], base[k % u][2])
            for k in range(n)]


def write_labeled(rows, classes: list[str], out: Path) -> str:
    """OUT/labeled.parquet (schemas.LABELED, one row per image, the class count in its footer):
    label = category, importance = count(category)^-1/2, tail = the rarest categories (together at
    most 30% of the images; at least the rarest one). Returns how `tail` was chosen."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import schemas

    counts = Counter(c for _, _, c in rows)
    tail_cats, tail_n = set(), 0
    for c in sorted(counts, key=lambda c: (counts[c], c)):
        if tail_n + counts[c] > 0.3 * len(rows):
            break
        tail_cats.add(c)
        tail_n += counts[c]
    if not tail_cats and len(counts) > 1:
        tail_cats = {min(counts, key=lambda c: (counts[c], c))}
    tail = [c in tail_cats for _, _, c in rows]
    rule = f"tail = images of the {len(tail_cats)} rarest of {len(counts)} categories ({sum(tail)} images)"
    if all(tail) or not any(tail):
        tail, rule = [k % 4 == 0 for k in range(len(rows))], "tail = every 4th image (a single category)"
    table = pa.Table.from_pylist([{"image_id": i, "image": str(p), "labels": [classes.index(c)],
                                   "importance": counts[c] ** -0.5, "tail": t}
                                  for (i, p, c), t in zip(rows, tail)], schema=schemas.LABELED)
    shutil.rmtree(out, ignore_errors=True)
    (out / "labeled.parquet").mkdir(parents=True)
    pq.write_table(schemas.with_class_count(table, len(classes), "openclipart-categories"),
                   out / "labeled.parquet" / "part-0.parquet")
    return rule


# --- writing -----------------------------------------------------------------------------------

def plain_loop(paths: list[Path], side: int, quality: int) -> dict:
    """Single-process Pillow (open, RGB, shorter side to `side` with LANCZOS, JPEG q`quality`):
    wall and CPU seconds, other processes' CPU meanwhile, and path -> sha256 of the JPEG."""
    out = {}
    c0, busy0, t0 = own_seconds(), machine_busy_seconds(), time.perf_counter()
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
    dt, cpu, busy = time.perf_counter() - t0, own_seconds() - c0, machine_busy_seconds() - busy0
    return {"seconds": dt, "cpu_s": cpu, "others_cpu_s": max(0.0, busy - cpu), "sha": out}


def read_back(out: Path, classes: list[str], folder: Path | None) -> dict:
    """One pass over the written tars: image index -> (image_id, sha256, JPEG bytes); with `folder`,
    the shards' own JPEG bytes also go to FOLDER/<category>/<image_id>.jpg (ImageFolder reads
    exactly what the shard readers read)."""
    from pipeline.wds import read_samples

    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    ids, sha, size = [], [], []
    for s in read_shard_set_meta(out).to_dict()["shards"]:
        for sample in read_samples(out / s["name"]):
            ids.append(sample.image_id)
            sha.append(hashlib.sha256(sample.image).hexdigest())
            size.append(len(sample.image))
            if folder is not None:
                d = folder / classes[sample.labels[0]]
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{sample.image_id}.jpg").write_bytes(sample.image)
    return {"image_id": ids, "sha": sha, "size": np.array(size, dtype=np.int64)}


# --- loading -----------------------------------------------------------------------------------

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


def time_loader(loader, epochs: int, warmup_batches: int = 10) -> dict:
    """A few warm-up batches of epoch 0 (page cache, FFCV's JIT), then epochs 1..`epochs` timed in
    full (worker start-up per epoch included: it is real); the positions of every timed batch."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(0)
    it = iter(loader)
    for _ in range(min(warmup_batches, len(loader))):
        next(it)
    del it
    times, n, cpu_s, others, positions = [], 0, 0.0, 0.0, {}
    for e in range(1, epochs + 1):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(e)
        c0, busy0, t0 = tree_cpu_seconds(), machine_busy_seconds(), time.perf_counter()
        k, pos = 0, []
        for batch in loader:
            k += batch[0].shape[0]
            if len(batch) > 2:
                pos.append(batch[2].numpy().copy())
        dt, c1, busy1 = time.perf_counter() - t0, tree_cpu_seconds(), machine_busy_seconds()
        times.append(dt)
        n, cpu_s, others = n + k, cpu_s + c1 - c0, others + max(0.0, busy1 - busy0 - (c1 - c0))
        if pos:
            positions[e] = np.stack(pos)
    return {"images": n, "seconds": sum(times), "epoch_s": times, "cpu_s": cpu_s, "others_cpu_s": others,
            "img_per_s": n / sum(times), "img_per_cpu_s": n / cpu_s if cpu_s else float("nan"),
            "positions": positions}


def repeats(batches: np.ndarray) -> dict:
    """[n, B] stored images per batch -> fraction of batches holding some image twice or more, and
    repeated pairs per batch (an image k times in a batch counts k(k-1)/2)."""
    s = np.sort(batches, axis=1)
    pairs = [sum(int(c) * (int(c) - 1) // 2 for c in np.unique(row, return_counts=True)[1]) for row in s]
    return {"batches": len(batches), "frac_with_repeat": float(np.mean((s[:, 1:] == s[:, :-1]).any(axis=1))),
            "pairs_per_batch": float(np.mean(pairs))}


def batch_repeats(sample_index, positions: dict, seeds: int = 5) -> dict:
    """Repeats within the loader's batches (positions per epoch, mapped to stored images through the
    epoch's index) against random permutations of the same multiset cut into as many batches."""
    got, ideal = [], []
    for e, pos in positions.items():
        images, order = sample_index.epoch_order(e)  # position order
        got.append(images[np.searchsorted(order, pos)])
        n, b = pos.shape
        for s in range(seeds):
            ideal.append(np.random.default_rng([s, e]).permutation(images)[:n * b].reshape(n, b))
    return {"loader": repeats(np.concatenate(got)), "ideal": repeats(np.concatenate(ideal)), "seeds": seeds}


def resume_times(loader, reps: int = 7) -> dict:
    """Seconds from iter() to the first batch at batch 0 and at 90% of epoch 0 (median of `reps`,
    alternating, after one warm-up); images the process decoded meanwhile (WdsEpochs' in-process
    counter: meaningful without workers)."""
    s90 = int(0.9 * len(loader))
    ds = getattr(loader, "dataset", None)

    def first(start: int) -> tuple[float, int]:
        loader.set_epoch(0, start=start)
        d0 = getattr(ds, "decoded", 0)
        t0 = time.perf_counter()
        it = iter(loader)
        next(it)
        dt = time.perf_counter() - t0
        if hasattr(it, "close"):
            it.close()
        del it
        return dt, getattr(ds, "decoded", 0) - d0

    first(0)
    t0s, t90s, decoded = [], [], {}
    for _ in range(reps):
        for start, times, key in ((0, t0s, "decoded_0"), (s90, t90s, "decoded_90")):
            dt, decoded[key] = first(start)
            times.append(dt)
    at0, at90 = statistics.median(t0s), statistics.median(t90s)
    return {"batches": len(loader), "start_90": s90, "first_batch_s_0": at0, "first_batch_s_90": at90,
            "ratio": at90 / at0, **decoded, "times_0": t0s, "times_90": t90s}
