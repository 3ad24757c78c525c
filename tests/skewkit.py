"""Run the vocab and label jobs on manifests in a fresh local[2] SparkContext with bounded
memory (a small spark.executor.pyspark.memory and driver memory), sampling the peak RSS of its
Python workers; used by tests/test_skew.py in a subprocess.

    python -m tests.skewkit OUT_JSON MANIFEST [MANIFEST ...]
"""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

PYSPARK_MEMORY = "2g"  # per Python worker, as address space (RLIMIT_AS): numpy, pyarrow and nltk reserve ~1 GB
DRIVER_MEMORY = "1g"


class WorkerRss:
    """Peak RSS (bytes) of Python processes descending from this one, other than itself."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.1):
            procs = {}
            for d in filter(str.isdigit, os.listdir("/proc")):
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                    exe = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")[0]
                except OSError:
                    continue
                f = stat[stat.rindex(")") + 2:].split()
                procs[int(d)] = (int(f[1]), int(f[21]) * page, not exe.endswith(b"java"))
            stack = [p for p, (pp, _, _) in procs.items() if pp == os.getpid()]
            while stack:
                pid = stack.pop()
                _, rss, is_python = procs[pid]
                if is_python:
                    self.peak = max(self.peak, rss)
                stack += [p for p, (pp, _, _) in procs.items() if pp == pid]

    def take(self) -> int:
        self._stop.wait(0.3)
        peak, self.peak = self.peak, 0
        return peak


def main(out: str, manifests: list[str]) -> None:
    from jobs.label import LabelConfig, run as label
    from jobs.lib.session import get_session
    from jobs.vocab import VocabConfig, run as vocab

    spark = get_session("skew", "local[2]", {"spark.executor.pyspark.memory": PYSPARK_MEMORY,
                                             "spark.driver.memory": DRIVER_MEMORY, "spark.ui.enabled": "false",
                                             "spark.ui.showConsoleProgress": "false"})
    rss, res = WorkerRss(), {}
    for m in manifests:
        d = Path(m).with_suffix("")
        rss.take()
        v = vocab(spark, VocabConfig(manifest=m, out=str(d / "vocab"), min_count=1))
        lab = label(spark, LabelConfig(manifest=m, vocab=str(d / "vocab"), out=str(d / "labeled"), tail_threshold=10))
        res[m] = {"python_worker_peak_rss": rss.take(), "vocab_size": v["vocab_size"], "labeled": lab["rows_kept"]}
    spark.stop()
    Path(out).write_text(json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
