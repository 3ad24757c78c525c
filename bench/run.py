"""Every benchmark in bench/, one after another (`make bench`).

    python -m bench.run [ARGS...]   # ARGS go to each benchmark's main(), e.g. --images 200000
"""
from __future__ import annotations

import sys

from bench import pipeline_bench

BENCHMARKS = {"pipeline": pipeline_bench.main}  # name -> main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for name, fn in BENCHMARKS.items():
        print(f"== bench {name}", flush=True)
        fn(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
