"""Every benchmark in bench/, one after another (`make bench`), with the load average at each start.

    python -m bench.run                           # all, with each benchmark's defaults
    python -m bench.run --only pipeline,shards    # a subset, by name
    BENCH_IMAGES=200000 python -m bench.run       # pipeline_bench --images (default 10,000,000)

Each benchmark prints its own table and writes its results JSON under build/bench.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field

from bench import caption_match_bench, dedup_bench, pipeline_bench, remote_read_bench, shards_bench, trainer_bench
from jobs.lib.config import parse_config


def _pipeline(argv):
    return pipeline_bench.main(["--images", os.environ["BENCH_IMAGES"]] if "BENCH_IMAGES" in os.environ else [])


# name -> main(argv); shards before trainer: trainer_bench reads the shard set shards_bench writes
BENCHMARKS = {"pipeline": _pipeline, "shards": shards_bench.main, "trainer": trainer_bench.main,
              "dedup": dedup_bench.main, "remote_read": remote_read_bench.main,
              "caption_match": caption_match_bench.main}


@dataclass(frozen=True)
class RunConfig:
    only: tuple[str, ...] = field(default=(), metadata={
        "help": f"comma-separated benchmarks to run (default: all): {','.join(BENCHMARKS)}"})

    def __post_init__(self):
        unknown = [n for n in self.only if n not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARKS)}")


def main(argv: list[str] | None = None) -> int:
    names = parse_config(RunConfig, argv, __doc__.splitlines()[0]).only or list(BENCHMARKS)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}", flush=True)
    for name in names:
        t0, load = time.perf_counter(), os.getloadavg()
        print(f"== bench {name} (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)
        BENCHMARKS[name]([])
        print(f"== bench {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
