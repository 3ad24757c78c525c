"""The Spark chain vocab -> label -> resample against a single-process DuckDB reference.

    python -m bench.pipeline_bench [--images 10000000] [--samples M] [--workdir build/bench] [--seed 0] \
        [--no-single-thread] [--spark-conf spark.sql.shuffle.partitions=8,...]

Generates a synthetic manifest once (cached under WORKDIR by its parameters), runs the three
jobs' run() in one local[2] session, then bench/reference.py on the same manifest (DuckDB with
2 threads, then with 1 unless --no-single-thread), prints
seconds per stage, rows/s and Spark/reference ratios, checks that both computed the same
vocabulary, labeled table and split sizes, and writes WORKDIR/results-<images>-s<seed>.json.
Per stage: CPU seconds of the whole process tree (Spark: JVM + Python workers + the driver;
DuckDB: its process), the CPU seconds Spark's Python workers used (Python work should grow with
distinct hashtags, not rows) and peak RSS (Spark's JVM, its Python driver; DuckDB's process).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jobs.lib.config import parse_config

MASTER = "local[2]"


@dataclass(frozen=True)
class BenchConfig:
    images: int = field(default=10_000_000, metadata={"help": "rows of the synthetic manifest"})
    samples: int | None = field(default=None, metadata={"help": "samples to draw (default: --images)"})
    workdir: str = field(default="build/bench", metadata={"help": "manifest cache and outputs"})
    seed: int = field(default=0, metadata={"help": "seed of the manifest and the draw"})
    min_count: int = field(default=2, metadata={"help": "vocab --min-count"})
    tail_threshold: int = field(default=5000, metadata={"help": "label --tail-threshold"})
    alpha: float = field(default=0.7, metadata={"help": "resample --alpha"})
    driver_memory: str = field(default="8g", metadata={"help": "spark.driver.memory"})
    duckdb_memory: str = field(default="8GB", metadata={"help": "DuckDB memory_limit"})
    single_thread: bool = field(default=True, metadata={
        "help": "also time the reference with one DuckDB thread (its outputs are checked too)"})
    spark_conf: tuple[str, ...] = field(default=(), metadata={"help": "extra key=value Spark settings"})

    def __post_init__(self):
        if self.images < 1:
            raise ValueError(f"--images must be >= 1, got {self.images}")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {self.samples}")
        bad = [kv for kv in self.spark_conf if "=" not in kv]
        if bad:
            raise ValueError(f"--spark-conf takes key=value pairs, got {bad}")

    @property
    def n_samples(self) -> int:
        return self.samples if self.samples is not None else self.images


def cached_manifest(cfg: BenchConfig) -> Path:
    """WORKDIR/manifest-<images>-s<seed>.parquet, generated only when absent (its sidecar last), by
    a child process: the generator's memory must not count in the Spark driver's peak RSS."""
    path = Path(cfg.workdir) / f"manifest-{cfg.images}-s{cfg.seed}.parquet"
    if not path.with_name(path.name + ".json").is_file():
        import subprocess

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.synthetic", f"images={cfg.images}", f"out={path}",
                        f"seed={cfg.seed}"], check=True)
        print(f"[bench] generated {path} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:3]) + sum(f[5:8])) / os.sysconf("SC_CLK_TCK")  # user nice system irq softirq steal


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CpuSampler:
    """CPU seconds of this process' descendants: the JVM's own threads and everything else (its
    Python daemon and workers). Sampled from /proc every `period` seconds by a thread, so workers
    that exit between two readings lose at most one period; cutime is not used (the Python
    daemon's children can outlive it, and their time is then credited to no descendant).
    A subclass may group descendants otherwise (`group`); io=True also sums each descendant's
    /proc/PID/io read_bytes and write_bytes (storage I/O, not page-cache hits) per group."""
    GROUPS: tuple[str, ...] = ("jvm", "python")

    def __init__(self, period: float = 0.25, io: bool = False):
        self._io = io
        self._seen: dict[int, tuple[str, float, int, int]] = {}  # pid -> (group, CPU s, read, written bytes)
        # bytes: the largest process of each group and this process; the groups' summed RSS
        self._peak = dict.fromkeys((*self.GROUPS, "driver"), 0)
        self._peak_sum = dict.fromkeys(self.GROUPS, 0)
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)
        self._thread.start()

    def group(self, chain: list[int], exe: bytes) -> str:
        """The group of a descendant; `chain`: pids from this process' child down to it."""
        return "jvm" if exe.endswith(b"java") else "python"

    @staticmethod
    def _io_bytes(pid: int) -> tuple[int, int]:
        try:
            f = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
            return int(f["read_bytes"]), int(f["write_bytes"])
        except (OSError, KeyError, ValueError):
            return 0, 0

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        procs = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                exe = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            f = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd on: state, ppid, ...
            procs[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick, exe, int(f[21]) * self._page)  # rss
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        stack = [(c, [c]) for c in children.get(os.getpid(), [])]
        rss_sum = dict.fromkeys(self.GROUPS, 0)
        with self._lock:
            if os.getpid() in procs:
                self._peak["driver"] = max(self._peak["driver"], procs[os.getpid()][3])
            while stack:
                pid, chain = stack.pop()
                _, cpu, exe, rss = procs[pid]
                kind = self.group(chain, exe)
                old = self._seen.get(pid, (kind, 0.0, 0, 0))
                io = self._io_bytes(pid) if self._io else (0, 0)
                self._seen[pid] = (kind, cpu, max(old[2], io[0]), max(old[3], io[1]))
                self._peak[kind] = max(self._peak[kind], rss)
                rss_sum[kind] += rss
                stack += [(c, chain + [c]) for c in children.get(pid, [])]
            for kind, v in rss_sum.items():
                self._peak_sum[kind] = max(self._peak_sum[kind], v)

    def _loop(self, period: float) -> None:
        while not self._stop.wait(period):
            self._sample()

    def totals(self) -> dict[str, float]:
        """CPU seconds so far per group, over every descendant ever seen (live or exited)."""
        self._sample()
        out = dict.fromkeys(self.GROUPS, 0.0)
        with self._lock:
            for kind, cpu, _, _ in self._seen.values():
                out[kind] += cpu
        return out

    def io_totals(self) -> dict[str, tuple[int, int]]:
        """(read_bytes, write_bytes) so far per group, over every descendant ever seen (io=True)."""
        self._sample()
        out = {k: [0, 0] for k in self.GROUPS}
        with self._lock:
            for kind, _, r, w in self._seen.values():
                out[kind][0] += r
                out[kind][1] += w
        return {k: (r, w) for k, (r, w) in out.items()}

    def take_peaks(self) -> dict[str, float]:
        """Peak RSS in MB since the last call: the largest process of each group, this process."""
        self._sample()
        with self._lock:
            out = {k: v / 2**20 for k, v in self._peak.items()}
            self._peak = dict.fromkeys(self._peak, 0)
        return out

    def take_tree_peaks(self) -> dict[str, float]:
        """Peak summed RSS in MB of each group's processes (sampled together) since the last call."""
        self._sample()
        with self._lock:
            out = {k: v / 2**20 for k, v in self._peak_sum.items()}
            self._peak_sum = dict.fromkeys(self._peak_sum, 0)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def run_spark(cfg: BenchConfig, manifest: Path, out: Path) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from jobs.label import LabelConfig, run as label
    from jobs.lib.session import get_session
    from jobs.resample import ResampleConfig, run as resample
    from jobs.vocab import VocabConfig, run as vocab

    conf = {"spark.driver.memory": cfg.driver_memory, "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false", **dict(kv.split("=", 1) for kv in cfg.spark_conf)}
    t0 = time.perf_counter()
    spark = get_session("bench", MASTER, conf)
    spark.range(1).count()  # the JVM and a first job: session start-up is its own row
    res = {"session": {"seconds": time.perf_counter() - t0}}
    stages = [
        ("vocab", lambda: vocab(spark, VocabConfig(manifest=str(manifest), out=str(out / "vocab"),
                                                   min_count=cfg.min_count))),
        ("label", lambda: label(spark, LabelConfig(manifest=str(manifest), vocab=str(out / "vocab"),
                                                   out=str(out / "labeled"), tail_threshold=cfg.tail_threshold))),
        ("resample", lambda: resample(spark, ResampleConfig(labeled=str(out / "labeled"), out=str(out / "samples"),
                                                            num_samples=cfg.n_samples, alpha=cfg.alpha,
                                                            seed=cfg.seed))),
    ]
    cpu = CpuSampler()
    cpu.take_peaks()
    for name, fn in stages:
        spark.sparkContext.setLocalProperty("bench.stage", name)  # read by bench/spark_profile.py
        # as separate spark-submit runs: label must not reuse vocab's cached manifest and tags
        spark.catalog.clearCache()
        cpu0, busy0, own0, t0 = cpu.totals(), machine_busy_seconds(), own_seconds(), time.perf_counter()
        stats = fn()
        dt, cpu1, busy1, own1 = time.perf_counter() - t0, cpu.totals(), machine_busy_seconds(), own_seconds()
        res[name] = {"seconds": dt, "stats": stats, **{f"{k}_cpu_s": cpu1[k] - cpu0[k] for k in cpu0},
                     "driver_cpu_s": own1 - own0, **{f"{k}_peak_rss_mb": v for k, v in cpu.take_peaks().items()}}
        res[name]["cpu_s"] = res[name]["jvm_cpu_s"] + res[name]["python_cpu_s"] + res[name]["driver_cpu_s"]
        res[name]["others_cpu_s"] = max(0.0, busy1 - busy0 - (own1 - own0) - sum(cpu1[k] - cpu0[k] for k in cpu0))
        print(f"[bench] spark {name}: {dt:.1f}s (JVM CPU {res[name]['jvm_cpu_s']:.1f}s, Python workers CPU "
              f"{res[name]['python_cpu_s']:.1f}s, driver CPU {res[name]['driver_cpu_s']:.1f}s, other processes CPU "
              f"{res[name]['others_cpu_s']:.1f}s; peak RSS JVM {res[name]['jvm_peak_rss_mb']:.0f} MB, "
              f"Python worker {res[name]['python_peak_rss_mb']:.0f} MB, driver {res[name]['driver_peak_rss_mb']:.0f} MB)",
              flush=True)
    cpu.close()
    spark.stop()
    return res


def run_reference(cfg: BenchConfig, manifest: Path, out: Path, threads: int = 2) -> dict:
    from bench import reference
    from pipeline import wordnet

    # the Spark driver loaded WordNet in this process; the reference pays its own load
    wordnet._load_wordnet.cache_clear()
    con = reference.connect(threads=threads, memory_limit=cfg.duckdb_memory)
    stages = [
        ("vocab", lambda: reference.vocab(con, str(manifest), out / "vocab", cfg.min_count, wordnet.DEFAULT_LEXNAMES)),
        ("label", lambda: reference.label(con, str(manifest), out / "vocab", out / "labeled", cfg.tail_threshold)),
        ("resample", lambda: reference.resample(out / "labeled", out / "samples", cfg.n_samples, cfg.alpha, cfg.seed)),
    ]
    res = {}
    rss = CpuSampler()
    for name, fn in stages:
        rss.take_peaks()
        busy0, own0, t0 = machine_busy_seconds(), own_seconds(), time.perf_counter()
        stats = fn()
        dt, busy1, own1 = time.perf_counter() - t0, machine_busy_seconds(), own_seconds()
        res[name] = {"seconds": dt, "stats": stats, "cpu_s": own1 - own0,
                     "others_cpu_s": max(0.0, busy1 - busy0 - (own1 - own0)),
                     "peak_rss_mb": rss.take_peaks()["driver"]}
        print(f"[bench] reference ({threads} thread{'s' * (threads > 1)}) {name}: {dt:.1f}s (CPU {own1 - own0:.1f}s, other processes CPU "
              f"{res[name]['others_cpu_s']:.1f}s)", flush=True)
    rss.close()
    con.close()
    return res


def _files(path: Path) -> str:
    """A DuckDB read_parquet argument for a Parquet file or a Spark output directory."""
    return "'" + (str(path / "*.parquet") if path.is_dir() else str(path)).replace("'", "''") + "'"


def compare(spark_out: Path, ref_out: Path, n_samples: int, alpha: float, spark_side: bool = True) -> dict[str, bool]:
    """Checks that both sides computed the same thing, each printed; returns name -> passed.
    spark_side False: `spark_out` is another reference run (its draw is the reference's own)."""
    import duckdb
    import pyarrow.parquet as pq

    from pipeline.sampling import TAIL, split_sizes

    checks = {}
    sv = sorted(pq.read_table(spark_out / "vocab" / "vocab.parquet").to_pylist(), key=lambda r: r["label"])
    rv = sorted(pq.read_table(ref_out / "vocab" / "vocab.parquet").to_pylist(), key=lambda r: r["label"])
    checks["vocab keys and images"] = {r["key"]: r["images"] for r in sv} == {r["key"]: r["images"] for r in rv}
    checks["vocab rows (label, name, synsets, hashtags)"] = sv == rv
    hm = [sorted(pq.read_table(d / "vocab" / "hashtag_map.parquet").to_pylist(), key=lambda r: r["hashtag"])
          for d in (spark_out, ref_out)]
    checks["hashtag_map"] = hm[0] == hm[1]
    con = duckdb.connect()
    con.execute("SET threads = 2").fetchall()
    tags = [con.execute("SELECT count(*), sum(hash(image_id, hashtags)) FROM read_parquet({})".format(
        _files(d / "vocab" / "image_hashtags.parquet"))).fetchall()[0] for d in (spark_out, ref_out)]
    checks["image_hashtags (rows, row hash sum)"] = tags[0] == tags[1]

    labeled = ("SELECT count(*), sum(tail::INT), sum(hash(image_id, image, labels, tail, hashtags)), "
               "round(sum(importance), 6) FROM read_parquet({})")
    lab = [con.execute(labeled.format(_files(d / "labeled" / "labeled.parquet"))).fetchall()[0] for d in (spark_out, ref_out)]
    print(f"[bench] labeled (rows, tail, row hash sum, importance sum): spark {lab[0]} reference {lab[1]}")
    checks["labeled rows, labels, importance and tail"] = lab[0] == lab[1]
    want_tail = split_sizes(n_samples, alpha)[TAIL]
    for name, d in (("spark", spark_out), ("reference", ref_out)):
        got = con.execute("SELECT count(*), count(DISTINCT position), min(position), max(position), sum(tail::INT) "
                          f"FROM read_parquet({_files(d / 'samples' / 'samples.parquet')})").fetchall()[0]
        checks[f"{name} samples: M rows, positions 0..M-1, exact tail share"] = \
            got == (n_samples, n_samples, 0, n_samples - 1, want_tail)
    if spark_side:
        # every Spark sample carries its image's labels and tail flag from the labeled table
        bad = con.execute(f"""SELECT count(*) FROM read_parquet({_files(spark_out / 'samples' / 'samples.parquet')}) s
            LEFT JOIN read_parquet({_files(spark_out / 'labeled' / 'labeled.parquet')}) l USING (image_id)
            WHERE l.image_id IS NULL OR s.labels <> l.labels OR s.tail <> l.tail""").fetchall()[0][0]
        checks["spark samples agree with labeled"] = bad == 0
    con.close()
    for name, ok in checks.items():
        print(f"[bench] check {'ok  ' if ok else 'FAIL'} {name if spark_side else 'one DuckDB thread: ' + name}")
    return checks


def print_table(cfg: BenchConfig, spark: dict, ref: dict, ref1: dict | None = None) -> dict:
    rows = {"vocab": cfg.images, "label": cfg.images, "resample": cfg.n_samples}
    head = f"{'stage':<10}{'Spark s':>10}{'ref s':>10}{'ratio':>8}{'rows':>12}{'Spark rows/s':>14}" \
           f"{'ref rows/s':>13}{'Spark CPU s':>13}{'ref CPU s':>11}{'Spark Py CPU s':>16}" \
           f"{'JVM MB':>8}{'driver MB':>11}{'ref MB':>8}"
    print(head)
    print("-" * len(head))
    if "session" in spark:
        print(f"{'session':<10}{spark['session']['seconds']:>10.1f}{'-':>10}{'-':>8}")
    for name, n in rows.items():
        s, r = spark[name]["seconds"], ref[name]["seconds"]
        sp = spark[name]
        print(f"{name:<10}{s:>10.1f}{r:>10.1f}{s / r:>8.2f}{n:>12,}{n / s:>14,.0f}{n / r:>13,.0f}"
              f"{sp['cpu_s']:>13.1f}{ref[name]['cpu_s']:>11.1f}{sp['python_cpu_s']:>16.1f}"
              f"{sp['jvm_peak_rss_mb']:>8.0f}{sp['driver_peak_rss_mb']:>11.0f}{ref[name]['peak_rss_mb']:>8.0f}")
    s, r = sum(spark[k]["seconds"] for k in rows), sum(ref[k]["seconds"] for k in rows)
    total = {"spark_s": s, "reference_s": r, "ratio": s / r,
             "ratio_with_session": (s + spark.get("session", {}).get("seconds", 0.0)) / r}
    cs, cr = sum(spark[k]["cpu_s"] for k in rows), sum(ref[k]["cpu_s"] for k in rows)
    total.update(spark_cpu_s=cs, reference_cpu_s=cr)
    print("-" * len(head))
    print(f"{'total':<10}{s:>10.1f}{r:>10.1f}{s / r:>8.2f}{'':>12}{'':>14}{'':>13}{cs:>13.1f}{cr:>11.1f}"
          f"   (with session start-up: {total['ratio_with_session']:.2f})")
    if ref1 is not None:
        r1 = {k: ref1[k]["seconds"] for k in rows}
        total.update(reference_1thread_s=sum(r1.values()), ratio_1thread=s / sum(r1.values()))
        print("one DuckDB thread: " + ", ".join(f"{k} {v:.1f}s" for k, v in r1.items())
              + f", total {sum(r1.values()):.1f}s; Spark/reference {total['ratio_1thread']:.2f}")
    # the machine is shared: CPU others used while we measured makes the figures pessimistic
    for side, res, wall in (("Spark", spark, s), ("reference", ref, r)):
        others = sum(res[k].get("others_cpu_s", 0.0) for k in rows)
        total[f"{side.lower()}_others_cpu_s"] = others
        flag = "  <- not an idle machine: rerun for figures to record" if others > 0.1 * wall * (os.cpu_count() or 1) else ""
        print(f"other processes used {others:.1f} CPU s during the {side} stages ({wall:.1f} s wall){flag}")
    return total


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(BenchConfig, argv, __doc__.splitlines()[0])
    manifest = cached_manifest(cfg)
    base = Path(cfg.workdir) / f"run-{cfg.images}-s{cfg.seed}"
    print(f"[bench] {cfg.images:,} images, {cfg.n_samples:,} samples, Spark {MASTER}, DuckDB 2 threads; "
          f"manifest {manifest} ({manifest.stat().st_size / 1e6:.0f} MB)", flush=True)
    spark = run_spark(cfg, manifest, (base / "spark").resolve())
    ref = run_reference(cfg, manifest, base / "reference")
    ref1 = run_reference(cfg, manifest, base / "reference-1thread", threads=1) if cfg.single_thread else None
    total = print_table(cfg, spark, ref, ref1)
    checks = compare((base / "spark").resolve(), (base / "reference").resolve(), cfg.n_samples, cfg.alpha)
    if ref1 is not None:
        one = compare((base / "reference-1thread").resolve(), (base / "reference").resolve(), cfg.n_samples, cfg.alpha,
                      spark_side=False)
        checks.update({f"one thread: {k}": v for k, v in one.items()})
    result = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count()}, "spark": spark, "reference": ref,
              "reference_1thread": ref1, "total": total, "checks": checks}
    path = Path(cfg.workdir) / f"results-{cfg.images}-s{cfg.seed}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    print(f"[bench] results -> {path}")
    if not all(checks.values()):
        raise SystemExit("[bench] Spark and the reference disagree: the timings compare different computations")
    return result


if __name__ == "__main__":
    main()
