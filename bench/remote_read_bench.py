"""Remote image reading: the shards job on the same images from local disk, an HTTP server with
per-request latency and an S3 server, with concurrent reads and one read at a time.

    python -m bench.remote_read_bench [--images 2000] [--latency-ms 20] [--workdir build/bench]

jobs/shards.py (Spark local[2], one session for every arm) on N openclipart-derived JPEGs
(bench/shards_bench_lib.source_jpegs), their references local paths, http:// URLs of a loopback
HTTP server that waits LATENCY before every response, and s3:// URLs of moto's S3 server on
loopback; remote arms with pipeline/image_reader's default concurrency and with one read in flight
(--read-concurrency 1, the baseline: what reading one image at a time costs). Servers run as
child processes whose CPU is reported apart from the job's. Per arm: wall and CPU seconds (the
job's process tree) per image, the ratio to local disk (target for HTTP with 20 ms latency:
wall <= 1.3x local), and whether the tars equal the local arm's byte for byte.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.pipeline_bench import machine_busy_seconds, own_seconds
from bench.shards_bench_lib import SelfTimedSampler, busy_flag, source_jpegs, write_labeled
from jobs.lib.config import parse_config
from pipeline.image_reader import ReadPolicy
from schemas.shard_set import read_shard_set_meta

MASTER = "local[2]"


@dataclass(frozen=True)
class RemoteReadBenchConfig:
    images: int = field(default=2000, metadata={"help": "images per arm"})
    latency_ms: float = field(default=20.0, metadata={"help": "HTTP server latency per request"})
    workdir: str = field(default="build/bench", metadata={"help": "JPEG cache and outputs"})
    side: int = field(default=256, metadata={"help": "shorter side of the source JPEGs"})
    seed: int = field(default=0, metadata={"help": "which openclipart PNGs"})


def proc_cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def start_servers(root: Path, latency_s: float):
    """(http base URL, s3 endpoint, [processes]): the two servers as child processes."""
    http = subprocess.Popen([sys.executable, "-m", "tests.helpers.servers", str(root), str(latency_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = http.stdout.readline().strip()
    from tests.helpers.servers import S3_ENV, free_port

    port = free_port()
    s3 = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
    for _ in range(100):
        try:
            import urllib.request
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return url, endpoint, [http, s3]


def upload(rows, endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="bench")
    for image_id, path, _ in rows:
        client.put_object(Bucket="bench", Key=f"{image_id}.jpg", Body=Path(path).read_bytes())


def run_arm(spark, cpu, labeled: Path, out: Path, concurrency: int, servers: list) -> dict:
    from jobs.shards import ShardsConfig, run

    shutil.rmtree(out, ignore_errors=True)
    srv0 = sum(proc_cpu_s(p.pid) for p in servers)
    c0, s0, busy0, own0, t0 = cpu.totals(), cpu.overhead_s, machine_busy_seconds(), own_seconds(), time.perf_counter()
    stats = run(spark, ShardsConfig(labeled=str(labeled), out=str(out), max_side=160,
                                    read_concurrency=concurrency))
    dt, c1, s1, busy1, own1 = time.perf_counter() - t0, cpu.totals(), cpu.overhead_s, machine_busy_seconds(), own_seconds()
    srv = sum(proc_cpu_s(p.pid) for p in servers) - srv0
    tree = (c1["jvm"] - c0["jvm"]) + (c1["python"] - c0["python"]) - srv + (own1 - own0) - (s1 - s0)
    return {"seconds": dt, "cpu_s": tree, "server_cpu_s": srv, "images": stats["images"],
            "rejected": sum(stats["rejected_images"].values()), "read_retries": stats["read_retries"],
            "others_cpu_s": max(0.0, busy1 - busy0 - tree - srv - (s1 - s0)),
            "tars": [s.sha256 for s in read_shard_set_meta(out).shards]}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(RemoteReadBenchConfig, argv, __doc__.splitlines()[0])
    work = Path(cfg.workdir)
    rows = source_jpegs(work, cfg.images, cfg.side, cfg.seed)
    flat = work / f"remote-read-{cfg.images}-{cfg.side}-s{cfg.seed}"  # one folder the servers serve
    if not (flat / ".complete").is_file():
        flat.mkdir(parents=True, exist_ok=True)
        for image_id, path, _ in rows:
            shutil.copyfile(path, flat / f"{image_id}.jpg")
        (flat / ".complete").write_text("")
    url, endpoint, servers = start_servers(flat, cfg.latency_ms / 1000)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from jobs.lib.session import get_session

    spark = get_session("remote-read-bench", MASTER, {"spark.ui.enabled": "false",
                                                      "spark.ui.showConsoleProgress": "false"})
    cpu = SelfTimedSampler()
    try:
        upload(rows, endpoint)
        classes = sorted({c for _, _, c in rows})
        refs = {"local": lambda i, p: str(flat / f"{i}.jpg"), "http": lambda i, p: f"{url}/{i}.jpg",
                "s3": lambda i, p: f"s3://bench/{i}.jpg"}
        labeled = {}
        for kind, ref in refs.items():
            labeled[kind] = work / f"remote-read-labeled-{kind}"
            write_labeled([(i, ref(i, p), c) for i, p, c in rows], classes, labeled[kind])
        write_labeled([(i, str(flat / f"{i}.jpg"), c) for i, _, c in rows[:50]], classes, work / "remote-read-warm")
        run_arm(spark, cpu, work / "remote-read-warm", work / "remote-read-out-warm", ReadPolicy.concurrency, servers)
        arms = [("local", "local", ReadPolicy.concurrency), ("http", "http", ReadPolicy.concurrency),
                ("s3", "s3", ReadPolicy.concurrency), ("http, one at a time", "http", 1),
                ("s3, one at a time", "s3", 1)]
        res = {}
        for name, kind, conc in arms:
            res[name] = run_arm(spark, cpu, labeled[kind], work / f"remote-read-out-{kind}-{conc}", conc, servers)
            r = res[name]
            print(f"[remote-read] {name}: {r['seconds']:.1f}s, CPU {r['cpu_s']:.1f}s (servers {r['server_cpu_s']:.1f}s),"
                  f" retries {r['read_retries']}{busy_flag(r['others_cpu_s'], r['seconds'])}", flush=True)
    finally:
        cpu.close()
        spark.stop()
        for p in servers:
            if p.stdin:
                p.stdin.close()
            p.terminate()
            p.wait(10)
    base = res["local"]
    n = cfg.images
    print(f"\nshards job on {n} images (Spark {MASTER}, {os.cpu_count()} cores), HTTP latency {cfg.latency_ms:g} ms, "
          f"concurrency {ReadPolicy.concurrency} per task\n")
    print("| source | wall s | wall ms/image | wall vs local | CPU s (job) | CPU ms/image | servers CPU s | "
          "tars = local |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['seconds']:.1f} | {1000 * r['seconds'] / n:.2f} | {r['seconds'] / base['seconds']:.2f}x | "
              f"{r['cpu_s']:.1f} | {1000 * r['cpu_s'] / n:.2f} | {r['server_cpu_s']:.1f} | "
              f"{'yes' if r['tars'] == base['tars'] else 'NO'} |")
    out = work / f"remote-read-results-{n}.json"
    out.write_text(json.dumps({"config": asdict(cfg), "arms": res}, indent=2))
    return res


if __name__ == "__main__":
    main()
