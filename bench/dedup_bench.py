"""The dedup job's search against evaluation index size: exact (flat) and HNSW faiss indexes, the
old LSH banding as a baseline, the job's search in Spark, and what a billion images would cost.

    python -m bench.dedup_bench [--sizes 10000,100000,1000000] [--float-sizes 10000,100000] \
        [--dim 256] [--variants 185] [--queries 1000] [--job-queries 100000,1000000] [--seed 0]

Synthetic evaluation indexes of N variants (dedup/ann.py, IndexSpec defaults: HNSW M=32,
efConstruction=80, efSearch=128):
- `binary`: clustered 63-bit pHash-like codes, --variants codes per evaluation image, each its
  image's random base hash with a share of bits flipped drawn uniformly in [0, 20%] per variant
  (how crop variants of one picture scatter around its hash).
- `float`: unit vectors in --dim dimensions clustered the same way: each variant its image's random
  unit centre rotated by an angle uniform in [0, 0.2 pi] (for random-hyperplane hashes a bit flips
  with probability angle / pi, so this is the same spread). --float-sizes stops at 100k by
  default: building HNSW over 1M 256-d vectors took 245 s on 2 busy cores.
Thresholds, --search-k and --probe are the job's defaults (dedup/config.py: pHash, rmac).

Queries (--queries): half planted near copies (a random indexed variant moved by level j =
k mod (T + 3): j bits flipped, T the pHash threshold; for float a cosine distance of
float_threshold * j / (T + 0.5), so j <= T is within the threshold and no plant sits on it), half
random (uniform hashes / isotropic unit vectors: the unrelated images that make up almost all of
a pretraining set).

1. Index cost. For each kind, N and index (flat, hnsw): build seconds (wall, --build-threads
   faiss threads) and serialised bytes per variant (faiss.serialize_index*, what executors
   receive); per 1,000 queries, the CPU seconds of the search (time.process_time, faiss on one
   thread, k = the job's --search-k nearest variants) and the distance computations per query:
   flat compares each query with all N variants; HNSW's count is faiss.cvar.hnsw_stats.ndis after
   hnsw_stats.reset() (faiss counts it for IndexBinaryHNSW as well as IndexHNSWFlat), given for
   the planted and the random half. "x prev" is the ratio to the previous N. The pairs are the
   (query, evaluation image) pairs within the threshold among each query's --probe nearest images
   (dedup.ann.nearest_owners, as the job keeps them); HNSW's image recall is its share of
   flat's pairs; planted recall is the share of planted queries with j <= T whose source image is
   among them (1.0 for flat by construction).
2. Banding baseline (bench/lsh_baseline.py, the job before faiss: --bands bands, radius 0, threshold T)
   on the same binary indexes and queries: candidate pairs per 1,000 queries (the distance
   computations it makes: each candidate is checked by Hamming distance), their share of all
   N x Q pairs, and the CPU seconds of lsh_baseline.pairs_within_threshold (numpy, one core).
3. The job's search in Spark: dedup.spark.query_descriptors over --job-queries synthetic
   pretraining hashes (the same half planted, half random mix) against the largest binary index
   as HNSW, shipped by broadcast exactly as EvalIndex.shipped() ships it, in a local[2]
   SparkSession; the count is forced with sum(size(nearest)). Input descriptors are cached first;
   the broadcast and the workers' first load of the index are timed separately. Reported: wall
   seconds, driver CPU seconds, CPU seconds of all Spark processes (JVM and Python workers,
   psutil), queries per second and microseconds per query per core (wall x cores / queries).
4. Estimate for --target-pretrain pretraining images against --target-eval-images evaluation
   images at --variants variants each: HNSW's search CPU per query fitted as a + b ln N over the
   measured N (an extrapolation beyond the largest N; distance computations fitted the same way),
   the job's Spark cost per query at the largest index (by wall x cores, and by the Spark
   processes' CPU, which other load on the machine does not inflate) plus that fitted growth,
   flat's linear cost, and banding's: candidates per query = the measured share x the variants,
   at the measured numpy seconds per candidate pair (a lower bound for the Spark join on band keys
   it ran as). Decoding and describing each image is a
   separate cost, not in these figures.

Writes WORKDIR/dedup-results.json and returns the same dict.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from bench.dedup_bench_data import Case, image_pairs, job_descriptors, make_case, planted_recall
from bench.lsh_baseline import Banding, default_bands, pairs_within_threshold
from dedup.ann import IndexSpec, build_index, index_bytes, search
from dedup.config import DEFAULT_THRESHOLD, DedupConfig
from jobs.lib.config import parse_config

JOB = {f.name: f.default for f in fields(DedupConfig)}  # the job's search_k and probe


@dataclass(frozen=True)
class DedupBenchConfig:
    sizes: tuple[str, ...] = field(default=("10000", "100000", "1000000"), metadata={"help": "binary index sizes N"})
    float_sizes: tuple[str, ...] = field(default=("10000", "100000"), metadata={
        "help": "float index sizes (building HNSW over 1M 256-d vectors took 245 s on 2 busy cores: "
                "add 1000000 to measure it)"})
    dim: int = field(default=256, metadata={"help": "float descriptor dimensions"})
    variants: int = field(default=185, metadata={"help": "variants per evaluation image (the job's pHash default)"})
    queries: int = field(default=1000, metadata={"help": "queries per index (half planted, half random)"})
    threshold: int = field(default=DEFAULT_THRESHOLD["phash"], metadata={"help": "pHash threshold T (bits)"})
    float_threshold: float = field(default=DEFAULT_THRESHOLD["rmac"], metadata={"help": "cosine distance threshold"})
    bands: int = field(default=default_bands(DEFAULT_THRESHOLD["phash"]), metadata={"help": "banding baseline: bands"})
    search_k: int = field(default=JOB["search_k"], metadata={"help": "nearest variants per query (the job's)"})
    probe: int = field(default=JOB["probe"], metadata={"help": "nearest images kept per query (the job's)"})
    build_threads: int = field(default=0, metadata={"help": "faiss threads while building (0: every core)"})
    job_queries: tuple[str, ...] = field(default=("100000", "1000000"), metadata={
        "help": "pretraining descriptors searched in Spark (empty: skip Spark)"})
    target_pretrain: float = field(default=1e9, metadata={"help": "estimate: pretraining images"})
    target_eval_images: int = field(default=50_000, metadata={"help": "estimate: evaluation images"})
    seed: int = field(default=0, metadata={"help": "seed of the codes and queries"})
    workdir: str = field(default="build/bench", metadata={"help": "results JSON goes here"})

    def __post_init__(self):
        for name in ("sizes", "float_sizes", "job_queries"):
            v = getattr(self, name)
            if not all(s.isdigit() and int(s) > 0 for s in v):
                raise ValueError(f"--{name.replace('_', '-')} must be positive integers, got {v}")
        if not self.sizes:
            raise ValueError("--sizes: give at least one binary index size")
        if self.queries < 10 or self.queries % 2:
            raise ValueError(f"--queries must be an even number >= 10, got {self.queries}")
        if self.dim < 2 or self.variants < 1:
            raise ValueError(f"--dim must be >= 2 and --variants >= 1, got {self.dim}, {self.variants}")
        if self.probe > self.search_k:
            raise ValueError(f"--probe {self.probe} must be <= --search-k {self.search_k}")
        Banding(self.threshold, self.bands)  # raises on a bad threshold or band count

    def sizes_of(self, kind: str) -> list[int]:
        return [int(s) for s in (self.sizes if kind == "binary" else self.float_sizes)]

    def limit(self, kind: str) -> float:
        return self.threshold if kind == "binary" else self.float_threshold


def measure_index(case: Case, how: str, cfg: DedupBenchConfig) -> tuple[dict, object, set]:
    """(row, the index, its image pairs) for one kind, size and index."""
    import faiss

    n, half = len(case.x), cfg.queries // 2
    t0 = time.perf_counter()
    index = build_index(case.x, IndexSpec(case.kind, how), cfg.build_threads or os.cpu_count())
    build_s = time.perf_counter() - t0
    size = len(index_bytes(index, case.kind))
    faiss.omp_set_num_threads(1)
    results, cpu, dis = [], [], []
    for part in (slice(0, half), slice(half, None)):  # planted, random
        faiss.cvar.hnsw_stats.reset()
        c0 = time.process_time()
        results.append(search(index, case.kind, case.queries[part], cfg.search_k))
        cpu.append(time.process_time() - c0)
        dis.append(n if how == "flat" else faiss.cvar.hnsw_stats.ndis / half)
    d, ids = (np.concatenate(a) for a in zip(*results))
    pairs = image_pairs(d, ids, case.owner, cfg.probe, cfg.limit(case.kind))
    row = {"kind": case.kind, "n": n, "index": how, "build_s": build_s, "bytes_per_variant": size / n,
           "cpu_s_per_1k_queries": sum(cpu) * 1000 / cfg.queries,
           "cpu_s_per_1k_planted": cpu[0] * 1000 / half, "cpu_s_per_1k_random": cpu[1] * 1000 / half,
           "distances_per_query": sum(dis) / 2, "distances_per_planted": dis[0], "distances_per_random": dis[1],
           "pairs": len(pairs), "planted_recall": planted_recall(pairs, case, cfg.threshold)}
    return row, index, pairs


def index_rows(cfg: DedupBenchConfig) -> tuple[list[dict], dict]:
    """Section 1: rows for every kind, size and index; and the binary cases and largest HNSW index."""
    rows, kept = [], {"cases": {}}
    print(f"{'kind':>6} {'N':>9} {'index':>5} {'build s':>8} {'B/var':>6} {'cpu s/1k q':>10} {'x prev':>6} "
          f"{'dis/query':>10} {'x prev':>6} {'planted':>8} {'random':>8} {'pairs':>6} {'recall':>6} {'planted':>7}")
    for kind in ("binary", "float"):
        prev = {}
        for n in cfg.sizes_of(kind):
            case = make_case(kind, n, cfg)
            flat_pairs = None
            for how in ("flat", "hnsw"):
                row, index, pairs = measure_index(case, how, cfg)
                if how == "flat":
                    flat_pairs = pairs
                row["recall_vs_flat"] = len(pairs & flat_pairs) / max(len(flat_pairs), 1)
                p = prev.get(how)
                for key, cost in (("cpu", "cpu_s_per_1k_queries"), ("distance", "distances_per_query")):
                    row[f"{key}_ratio_to_previous"] = None if p is None else row[cost] / p[cost]
                prev[how] = row
                rows.append(row)
                _print_index_row(row)
                if kind == "binary" and how == "hnsw" and n == max(cfg.sizes_of("binary")):
                    kept["index"] = index
            if kind == "binary":
                kept["cases"][n] = case
    return rows, kept


def _ratio(r) -> str:
    return "" if r is None else f"{r:.2f}"


def _print_index_row(r: dict):
    print(f"{r['kind']:>6} {r['n']:>9} {r['index']:>5} {r['build_s']:>8.2f} {r['bytes_per_variant']:>6.0f} "
          f"{r['cpu_s_per_1k_queries']:>10.4f} {_ratio(r['cpu_ratio_to_previous']):>6} "
          f"{r['distances_per_query']:>10.0f} {_ratio(r['distance_ratio_to_previous']):>6} "
          f"{r['distances_per_planted']:>8.0f} {r['distances_per_random']:>8.0f} "
          f"{r['pairs']:>6} {r['recall_vs_flat']:>6.3f} {r['planted_recall']:>7.3f}", flush=True)


def banding_rows(cases: dict, cfg: DedupBenchConfig) -> list[dict]:
    """Section 2: bench/lsh_baseline.py banding over the same binary indexes and queries."""
    banding = Banding(cfg.threshold, cfg.bands)
    print(f"\nbanding baseline: {cfg.bands} bands, radius {banding.radius}, threshold {cfg.threshold} "
          "(lsh_baseline.pairs_within_threshold)")
    print(f"{'N':>9} {'cand/1k q':>12} {'x prev':>6} {'share':>9} {'cpu s/1k q':>10} {'s/pair':>9} {'pairs':>6} "
          f"{'planted':>7}")
    rows, prev = [], None
    for n, case in cases.items():
        c0 = time.process_time()
        found, _, n_cand = pairs_within_threshold(case.x, case.queries, banding)
        cpu = time.process_time() - c0
        pairs = set(zip(found[:, 1].tolist(), case.owner[found[:, 0]].tolist()))
        row = {"n": n, "bands": cfg.bands, "radius": banding.radius, "candidates": n_cand,
               "candidates_per_1k_queries": n_cand * 1000 / cfg.queries,
               "share_of_all_pairs": n_cand / (n * cfg.queries),
               "ratio_to_previous": None if prev is None else n_cand / prev,
               "cpu_s_per_1k_queries": cpu * 1000 / cfg.queries,
               "cpu_s_per_candidate": cpu / max(n_cand, 1), "pairs": len(pairs),
               "planted_recall": planted_recall(pairs, case, cfg.threshold)}
        rows.append(row)
        print(f"{n:>9} {row['candidates_per_1k_queries']:>12.0f} {_ratio(row['ratio_to_previous']):>6} "
              f"{row['share_of_all_pairs']:>9.2e} {row['cpu_s_per_1k_queries']:>10.4f} "
              f"{row['cpu_s_per_candidate']:>9.2e} "
              f"{row['pairs']:>6} {row['planted_recall']:>7.3f}", flush=True)
        prev = n_cand
    return rows


def _spark_cpu() -> float | None:
    """CPU seconds of this process's children (the JVM, the Python workers), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def _cores(sc) -> int:
    """Task slots of the session: N of local[N] (local[*]: every core), else the default parallelism."""
    m = re.fullmatch(r"local\[(\d+|\*)(,\d+)?\]", sc.master)
    if m:
        return os.cpu_count() if m.group(1) == "*" else int(m.group(1))
    return sc.defaultParallelism


def job_rows(spark, case: Case, index, cfg: DedupBenchConfig) -> tuple[list[dict], dict]:
    """Section 3: query_descriptors in Spark against `case`'s HNSW `index`, shipped as the job ships it."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from dedup.index import EvalIndex
    from dedup.spark import query_descriptors

    images = int(case.owner[-1]) + 1
    variant = (np.arange(len(case.x)) % cfg.variants).astype(np.int32)
    eidx = EvalIndex("binary", IndexSpec("binary", "hnsw"), ["bench"] * images, [str(i) for i in range(images)],
                     case.owner, variant, np.zeros(len(case.x), bool), index, "hnsw")
    cores = _cores(spark.sparkContext)
    t0 = time.perf_counter()
    bc = spark.sparkContext.broadcast(eidx.shipped())
    broadcast_s = time.perf_counter() - t0
    warm = spark.createDataFrame(pa.table({"pretrain_id": [str(i) for i in range(4 * cores)],
                                           "hash": case.queries[:4 * cores]})).repartition(2 * cores)
    t0 = time.perf_counter()
    query_descriptors(warm, "pretrain_id", "hash", bc, cfg.probe, cfg.search_k).agg(F.sum(F.size("nearest"))).first()
    load_s = time.perf_counter() - t0
    print(f"\njob search (query_descriptors, local[{cores}]) against the binary HNSW index of {len(case.x)} variants "
          f"({images} images): broadcast {broadcast_s:.1f} s, first load on the workers {load_s:.1f} s")
    print(f"{'queries':>9} {'wall s':>8} {'driver cpu':>10} {'spark cpu':>9} {'queries/s':>10} {'us/q/core':>9} "
          f"{'nearest':>9}")
    rows = []
    for n in map(int, cfg.job_queries):
        q = job_descriptors(case, n, cfg)
        df = (spark.createDataFrame(pa.table({"row": np.arange(n), "hash": q}))
              .select(F.col("row").cast("string").alias("pretrain_id"), "hash").repartition(4 * cores).cache())
        df.count()
        t0, c0, s0 = time.perf_counter(), time.process_time(), _spark_cpu()
        nearest = query_descriptors(df, "pretrain_id", "hash", bc, cfg.probe, cfg.search_k
                                    ).agg(F.sum(F.size("nearest"))).first()[0]
        wall, cpu, s1 = time.perf_counter() - t0, time.process_time() - c0, _spark_cpu()
        df.unpersist()
        spark_cpu = None if s0 is None else s1 - s0
        row = {"queries": n, "index_n": len(case.x), "cores": cores, "wall_s": wall, "driver_cpu_s": cpu,
               "spark_cpu_s": spark_cpu, "queries_per_s": n / wall, "us_per_query_per_core": wall * cores / n * 1e6,
               "spark_cpu_us_per_query": None if spark_cpu is None else spark_cpu / n * 1e6, "nearest": int(nearest)}
        rows.append(row)
        print(f"{n:>9} {wall:>8.2f} {cpu:>10.2f} {'n/a' if spark_cpu is None else f'{spark_cpu:.1f}':>9} "
              f"{n / wall:>10.0f} {row['us_per_query_per_core']:>9.1f} {int(nearest):>9}", flush=True)
    bc.unpersist()
    return rows, {"broadcast_s": broadcast_s, "first_load_s": load_s, "index_n": len(case.x), "images": images}


def _log_fit(n: list[int], y: list[float]) -> tuple[float, float]:
    """(a, b) of the least-squares fit y = a + b ln n."""
    b, a = np.polyfit(np.log(np.asarray(n, float)), np.asarray(y, float), 1)
    return float(a), float(b)


def estimate(index: list[dict], banding: list[dict], job: list[dict], cfg: DedupBenchConfig) -> dict:
    """Section 4: core-hours of the search for target_pretrain images against the target index."""
    target = cfg.target_eval_images * cfg.variants
    hours = cfg.target_pretrain / 3600
    out = {"target_pretrain": cfg.target_pretrain, "target_variants": target}
    print(f"\nestimate: {cfg.target_pretrain:.3g} pretraining images against {cfg.target_eval_images} evaluation "
          f"images x {cfg.variants} variants = {target:,} variants; search only (decoding and describing each image "
          "is a separate cost, not included)")
    growth = {}
    for kind in ("binary", "float"):
        rows = [r for r in index if r["kind"] == kind and r["index"] == "hnsw"]
        if len(rows) < 2:
            continue
        n = [r["n"] for r in rows]
        a, b = _log_fit(n, [r["cpu_s_per_1k_queries"] / 1000 for r in rows])
        da, db = _log_fit(n, [r["distances_per_query"] for r in rows])
        growth[kind] = b
        per_query, dis = a + b * math.log(target), da + db * math.log(target)
        out[f"hnsw_{kind}"] = {"fit_a_s": a, "fit_b_s": b, "s_per_query": per_query, "core_hours": per_query * hours,
                               "distances_per_query": dis}
        print(f"  hnsw {kind}: CPU per query = {a:.3g} + {b:.3g} ln N s, distance computations = {da:.0f} + "
              f"{db:.0f} ln N (fits over N = {', '.join(map(str, n))}; an extrapolation to {target:,}): "
              f"{per_query * 1e6:.0f} us and {dis:,.0f} distances per query, {per_query * hours:,.0f} core-hours")
        flat = [r for r in index if r["kind"] == kind and r["index"] == "flat"][-1]
        lin = flat["cpu_s_per_1k_queries"] / 1000 / flat["n"] * target
        out[f"flat_{kind}"] = {"s_per_query": lin, "core_hours": lin * hours}
        print(f"  flat {kind}: linear in N from {flat['n']:,}: {lin * 1e3:.1f} ms and {target:,} distances per query, "
              f"{lin * hours:,.0f} core-hours")
    if job and "binary" in growth:
        j = job[-1]
        more = growth["binary"] * (math.log(target) - math.log(j["index_n"]))  # fitted growth, s per query
        out["job_binary"] = {"s_per_query": j["us_per_query_per_core"] / 1e6 + more}
        out["job_binary"]["core_hours"] = out["job_binary"]["s_per_query"] * hours
        print(f"  job search in Spark (phash, hnsw), measured at {j['index_n']:,} variants + the fitted growth to "
              f"{target:,}: by wall x cores {j['us_per_query_per_core']:.0f} + {more * 1e6:.0f} us/query, "
              f"{out['job_binary']['core_hours']:,.0f} core-hours", end="")
        if j["spark_cpu_us_per_query"] is not None:
            cpu = j["spark_cpu_us_per_query"] / 1e6 + more
            out["job_binary"].update(cpu_s_per_query=cpu, cpu_core_hours=cpu * hours)
            print(f"; by the Spark processes' CPU {j['spark_cpu_us_per_query']:.0f} + {more * 1e6:.0f} us/query, "
                  f"{cpu * hours:,.0f} core-hours", end="")
        print()
    last = banding[-1]
    share = last["share_of_all_pairs"]
    pairs = cfg.target_pretrain * target * share
    out["banding"] = {"share": share, "candidates_per_query": share * target, "candidate_pairs": pairs,
                      "s_per_candidate": last["cpu_s_per_candidate"],
                      "core_hours": pairs * last["cpu_s_per_candidate"] / 3600}
    print(f"  banding ({cfg.bands} bands): {share:.2%} of the variants = {share * target:,.0f} candidates per query, "
          f"{pairs:.3g} candidate pairs x {last['cpu_s_per_candidate']:.2e} s each (numpy at N = {last['n']:,}; a "
          f"lower bound for the Spark join it ran as) = {out['banding']['core_hours']:,.0f} core-hours")
    return out


def main(argv: list[str] | None = None) -> dict:
    from pyspark.sql import SparkSession

    cfg = parse_config(DedupBenchConfig, argv, __doc__.splitlines()[0])
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()
    index, kept = index_rows(cfg)
    banding = banding_rows(kept["cases"], cfg)
    job, job_meta = [], {}
    if cfg.job_queries:
        from jobs.lib.session import get_session

        started = SparkSession.getActiveSession() is None  # stop only a session this bench started
        spark = get_session("dedup-bench", "local[2]", {"spark.driver.memory": "4g", "spark.ui.enabled": "false",
                                                        "spark.ui.showConsoleProgress": "false"})
        try:
            job, job_meta = job_rows(spark, kept["cases"][max(cfg.sizes_of("binary"))], kept["index"], cfg)
        finally:
            if started:
                spark.stop()
    est = estimate(index, banding, job, cfg)
    seconds, cpu, load1 = time.perf_counter() - t0, time.process_time() - c0, os.getloadavg()
    print(f"\ntotal {seconds:.0f} s wall, {cpu:.0f} s CPU (this process); load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after", flush=True)
    result = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
              "machine": {"cpus": os.cpu_count()}, "index_rows": index, "banding_rows": banding, "job_rows": job,
              "job": job_meta, "estimate": est, "seconds": seconds, "cpu_s": cpu,
              "load_average": {"before": list(load0), "after": list(load1)}}
    path = Path(cfg.workdir) / "dedup-results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
