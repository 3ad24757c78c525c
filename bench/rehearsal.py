"""The rehearsal: the whole data chain on a loopback Spark standalone cluster, with per-stage figures.

    python -m bench.rehearsal images=20000 [workers=2] [out=build/rehearsal] [keep=false] [--cost-model]

Generates (once, cached under CACHE/corpus-<images>-s<seed>/) a synthetic img2dataset webdataset
corpus (pipeline/synthetic_corpus.py), starts a standalone master and one worker with `workers`
cores on 127.0.0.1 (bench/standalone.py), then runs each stage with `spark-submit --master
spark://...`: ingest (jobs/ingest.py --format img2dataset; while that job is absent, a stand-in
that extracts the JPEGs and writes the manifest in this process), dedup (phash against an
evaluation folder of `eval_copies` corpus images and `eval_new` new ones, so the copies are known),
vocab, label, shards and resample with `make demo`'s flags. Per stage: wall seconds, CPU seconds of
the whole process tree (spark-submit's driver JVM and Python, the executors and their Python
workers, the master and worker daemons), CPU seconds per image, the sizes of the stage's input and
output directories, storage I/O (/proc/PID/io read_bytes and write_bytes summed over the tree:
page-cache hits are not reads), and peak summed RSS of the driver tree and of the executor tree.
Prints a Markdown table, checks every stage's output is complete, writes OUT/rehearsal.json;
--cost-model also prints bench/cost_model.py's extrapolation to 1B and 3.6B images. keep=false
removes the stage outputs afterwards (the figures, logs and checks stay).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import cost_model
from bench.pipeline_bench import CpuSampler, machine_busy_seconds, own_seconds
from bench.rehearsal_stages import check_stage, stage_commands
from bench.standalone import Worker, cluster_env, standalone_cluster
from pipeline.cli import key, load_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RehearsalConfig:
    images: int = key(20_000, "corpus rows (URLs), failed ones included")
    workers: int = key(2, "cores of the standalone worker (and processes generating the corpus)")
    out: str = key("build/rehearsal", "stage outputs, logs and rehearsal.json")
    keep: bool = key(False, "keep the stage outputs (false: removed once measured and checked)")
    seed: int = key(0, "seed of the corpus")
    cache: str = key("build/cache", "where the corpus is cached by (images, seed)")
    shard_size: int = key(1000, "corpus rows per img2dataset shard")
    eval_copies: int = key(8, "corpus images copied into dedup's evaluation folder (known duplicates)")
    eval_new: int = key(8, "new images in dedup's evaluation folder (no duplicate in the corpus)")
    worker_memory: str = key("6g", "the worker's memory")
    executor_memory: str = key("3g", "spark.executor.memory")
    driver_memory: str = key("2g", "spark.driver.memory")
    cost_model: bool = key(False, "also print the cost model (also: --cost-model)")
    gpu_images_per_s: float | None = key(None, "cost model: SWAG pretraining img/s per GPU (an input, not measured)")

    def __post_init__(self):
        if self.images < 10:
            raise ValueError(f"images must be >= 10, got {self.images}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


class TreeSampler(CpuSampler):
    """CpuSampler grouping this process' descendants by tree: `driver` (spark-submit's JVM and
    Python), `executor` (what the standalone worker starts: executor JVMs and their Python
    daemon and workers), `daemons` (the master and worker JVMs themselves)."""
    GROUPS = ("driver", "executor", "daemons")

    def __init__(self, daemon_pids: set[int], worker_pids: set[int]):
        self.daemon_pids, self.worker_pids = daemon_pids, worker_pids
        super().__init__(io=True)

    def group(self, chain: list[int], exe: bytes) -> str:
        if chain[0] in self.worker_pids and len(chain) > 1:
            return "executor"
        return "daemons" if chain[0] in self.daemon_pids else "driver"


def dir_bytes(*paths: Path) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def cached_corpus(cfg: RehearsalConfig) -> Path:
    """CACHE/corpus-<images>-s<seed>/, generated in a child process only when incomplete."""
    from pipeline.synthetic_corpus import CorpusParams, corpus_complete

    path = Path(cfg.cache) / f"corpus-{cfg.images}-s{cfg.seed}"
    params = CorpusParams(images=cfg.images, seed=cfg.seed, shard_size=cfg.shard_size)
    if not corpus_complete(path, params):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.synthetic_corpus", f"out={path}", f"images={cfg.images}",
                        f"seed={cfg.seed}", f"shard_size={cfg.shard_size}", f"workers={cfg.workers}"], check=True)
        print(f"[rehearsal] generated {path} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def eval_folder(corpus: Path, out: Path, copies: int, new: int, seed: int) -> list[str]:
    """OUT/eval/: `copies` corpus JPEGs byte for byte (copy_<key>.jpg, spread over the shards) and
    `new` images the corpus does not hold (new_<i>.jpg); returns the copied keys."""
    import numpy as np

    from pipeline.synthetic_corpus import draw_image, jpeg_bytes

    out.mkdir(parents=True, exist_ok=True)
    tars = sorted(corpus.glob("*.tar"))
    keys = []
    for i in range(copies):
        with tarfile.open(tars[i % len(tars)]) as tar:
            jpgs = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
            m = jpgs[(i // len(tars) * 7 + 3) % len(jpgs)]
            (out / f"copy_{m.name}").write_bytes(tar.extractfile(m).read())
            keys.append(m.name.removesuffix(".jpg"))
    for i in range(new):
        rng = np.random.default_rng([seed + 1_000_003, i])  # another stream than any corpus row
        (out / f"new_{i}.jpg").write_bytes(jpeg_bytes(draw_image(rng, 96)))
    return keys


def stand_in_ingest(corpus: Path, out: Path) -> None:
    """Until jobs/ingest.py lands: the corpus' JPEGs extracted to OUT/images/ and a manifest
    (image_id = key, image = path, caption) in OUT/manifest.parquet, then OUT/stats.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = {"image_id": [], "image": [], "caption": []}
    for t in sorted(corpus.glob("*.tar")):
        with tarfile.open(t) as tar:
            captions = {}
            for m in tar.getmembers():
                k, ext = m.name.rsplit(".", 1)
                data = tar.extractfile(m).read()
                if ext == "jpg":
                    path = out / "images" / m.name
                    path.write_bytes(data)
                    rows["image_id"].append(k)
                    rows["image"].append(str(path.resolve()))
                elif ext == "txt":
                    captions[k] = data.decode()
            rows["caption"] += [captions[k] for k in rows["image_id"][len(rows["caption"]):]]
    pq.write_table(pa.table(rows), out / "manifest.parquet")
    (out / "stats.json").write_text(json.dumps({"rows_written": len(rows["image_id"]), "stand_in": True}) + "\n")


def spark_args(cfg: RehearsalConfig, url: str) -> list[str]:
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.log.level": "WARN",
            "spark.executor.memory": cfg.executor_memory, "spark.driver.memory": cfg.driver_memory}
    return ["--master", url, *[a for k, v in conf.items() for a in ("--conf", f"{k}={v}")]]


def measure(sampler: TreeSampler, fn) -> dict:
    """Runs fn(); the process tree's CPU, storage I/O and peak RSS meanwhile."""
    sampler.take_tree_peaks()
    cpu0, io0, own0, busy0, t0 = sampler.totals(), sampler.io_totals(), own_seconds(), machine_busy_seconds(), time.perf_counter()
    rc = fn()
    time.sleep(1.0)  # the executors exit after the driver: let the sampler see their last CPU
    dt = time.perf_counter() - t0 - 1.0
    cpu1, io1, own1, busy1 = sampler.totals(), sampler.io_totals(), own_seconds(), machine_busy_seconds()
    peaks = sampler.take_tree_peaks()
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    cpu["driver"] += own1 - own0  # this process' own work (the stand-in ingest); ~0 for spark-submit stages
    return {"rc": rc, "wall_s": dt, "cpu_s": sum(cpu.values()), **{f"{k}_cpu_s": v for k, v in cpu.items()},
            "others_cpu_s": max(0.0, busy1 - busy0 - sum(cpu.values())),
            "io_read_bytes": sum(io1[k][0] - io0[k][0] for k in io0),
            "io_write_bytes": sum(io1[k][1] - io0[k][1] for k in io0),
            "driver_peak_rss_mb": peaks["driver"], "executor_peak_rss_mb": peaks["executor"]}


def run(cfg: RehearsalConfig) -> dict:
    out = Path(cfg.out).resolve()
    corpus = cached_corpus(cfg).resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    copied = eval_folder(corpus, out / "eval", cfg.eval_copies, cfg.eval_new, cfg.seed)
    ingest_job = (ROOT / "jobs" / "ingest.py").is_file()
    env = {**cluster_env(sys.executable), "PYSPARK_DRIVER_PYTHON": sys.executable, "PYTHONHASHSEED": "0"}
    stages = []
    t_all = time.perf_counter()
    with standalone_cluster(out / "cluster", [Worker("127.0.0.1", cfg.workers, cfg.worker_memory)], env=env) as cl:
        sampler = TreeSampler({cl.master_pid, *cl.worker_pids}, set(cl.worker_pids))
        try:
            for st in stage_commands(out, corpus, cfg.images, ingest_job):
                log = out / "logs" / f"{st.name}.log"
                if st.argv is None:
                    def fn():
                        stand_in_ingest(corpus, out / "ingest")
                        return 0
                else:
                    def fn(st=st, log=log):
                        with open(log, "w") as f:
                            return subprocess.run([cl.spark_submit, *spark_args(cfg, cl.url), str(ROOT / st.argv[0]),
                                                   *st.argv[1:]], env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
                print(f"[rehearsal] {st.name}: {st.describe()}", flush=True)
                rec = {"stage": st.name, "command": st.describe(), **measure(sampler, fn)}
                if rec["rc"] != 0:
                    raise RuntimeError(f"stage {st.name} failed (rc {rec['rc']}): {log}\n"
                                       + log.read_text(errors="replace")[-3000:])
                rec["input_bytes"] = dir_bytes(*st.inputs)
                rec["output"], rec["output_bytes"] = str(st.output), dir_bytes(st.output)
                rec["cpu_s_per_image"] = rec["cpu_s"] / cfg.images
                rec["checks"] = check_stage(st.name, out, corpus, copied, cfg.images)
                stages.append(rec)
                print(f"[rehearsal] {st.name}: {rec['wall_s']:.1f}s wall, {rec['cpu_s']:.1f} CPU s, "
                      f"checks {rec['checks']}", flush=True)
        finally:
            sampler.close()
    load = os.getloadavg()
    result = {"images": cfg.images, "config": asdict(cfg), "corpus": str(corpus), "corpus_bytes": dir_bytes(corpus),
              "ingest_job": ingest_job, "stages": stages, "wall_s_all": time.perf_counter() - t_all,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"}
    (out / "rehearsal.json").write_text(json.dumps(result, indent=1) + "\n")
    if not cfg.keep:
        for st in stages:
            shutil.rmtree(st["output"], ignore_errors=True)
        shutil.rmtree(out / "cluster", ignore_errors=True)
    return result


def markdown(result: dict) -> str:
    head = ["stage", "wall s", "CPU s", "CPU ms/image", "in MB", "out MB", "disk read MB", "disk write MB",
            "driver RSS MB", "executor RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for s in result["stages"]:
        lines.append("| " + " | ".join([
            s["stage"], f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}", f"{1e3 * s['cpu_s_per_image']:.2f}",
            f"{s['input_bytes'] / 1e6:.1f}", f"{s['output_bytes'] / 1e6:.1f}", f"{s['io_read_bytes'] / 1e6:.1f}",
            f"{s['io_write_bytes'] / 1e6:.1f}", f"{s['driver_peak_rss_mb']:.0f}", f"{s['executor_peak_rss_mb']:.0f}"]) + " |")
    tot = {k: sum(s[k] for s in result["stages"]) for k in ("wall_s", "cpu_s", "cpu_s_per_image")}
    lines.append(f"| total | {tot['wall_s']:.1f} | {tot['cpu_s']:.1f} | {1e3 * tot['cpu_s_per_image']:.2f} | | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    flag = "--cost-model" in argv
    cfg = load_config(RehearsalConfig, [a for a in argv if a != "--cost-model"], "bench.rehearsal", __doc__)
    result = run(cfg)
    print(f"\nRehearsal at {cfg.images:,} images, {cfg.workers}-core standalone worker ({result['machine']}); "
          f"CPU s: the whole process tree\n")
    print(markdown(result))
    if flag or cfg.cost_model:
        print("\n" + cost_model.markdown(result, cfg.gpu_images_per_s))
    print(f"\n[rehearsal] {Path(cfg.out) / 'rehearsal.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
