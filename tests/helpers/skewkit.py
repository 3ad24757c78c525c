"""Run the vocab and label jobs on manifests in a fresh local[2] SparkContext with bounded
memory (a small spark.executor.pyspark.memory and driver memory), sampling the peak RSS of its
Python workers; used by tests/spark/test_skew.py in a subprocess.

    python -m tests.helpers.skewkit OUT_JSON MANIFEST [MANIFEST ...]
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

    events = Path(out).with_suffix(".events")
    events.mkdir(parents=True, exist_ok=True)
    spark = get_session("skew", "local[2]", {"spark.executor.pyspark.memory": PYSPARK_MEMORY,
                                             "spark.driver.memory": DRIVER_MEMORY, "spark.ui.enabled": "false",
                                             "spark.ui.showConsoleProgress": "false",
                                             "spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events),
                                             "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"})
    rss, res = WorkerRss(), {}
    for m in manifests:
        d = Path(m).with_suffix("")
        rss.take()
        spark.sparkContext.setJobGroup(m, m)
        v = vocab(spark, VocabConfig(manifest=m, out=str(d / "vocab"), min_count=1))
        lab = label(spark, LabelConfig(manifest=m, vocab=str(d / "vocab"), out=str(d / "labeled"), tail_threshold=10))
        res[m] = {"python_worker_peak_rss": rss.take(), "vocab_size": v["vocab_size"], "labeled": lab["rows_kept"]}
    spark.stop()
    for m, n in shuffle_records(events).items():
        res[m]["shuffle_records_written"] = n
    Path(out).write_text(json.dumps(res))


def shuffle_records(events: Path) -> dict[str, int]:
    """Shuffle records written per job group, from Spark's event log: what crossed a shuffle."""
    group_of_stage, records = {}, {}
    for log in (p for p in events.rglob("*") if p.is_file()):
        for line in log.read_text().splitlines():
            e = json.loads(line)
            if e["Event"] == "SparkListenerJobStart":
                group = (e.get("Properties") or {}).get("spark.jobGroup.id")
                for stage in e.get("Stage IDs", []):
                    group_of_stage[stage] = group
            elif e["Event"] == "SparkListenerTaskEnd" and e.get("Task Metrics"):
                group = group_of_stage.get(e["Stage ID"])
                w = e["Task Metrics"].get("Shuffle Write Metrics", {}).get("Shuffle Records Written", 0)
                records[group] = records.get(group, 0) + w
    return records


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
