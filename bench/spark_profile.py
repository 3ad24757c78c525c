"""Where a Spark run's time went, from its event log: one line per job, its stages below it.

    python -m bench.pipeline_bench --images 200000 \
        --spark-conf spark.eventLog.enabled=true,spark.eventLog.dir=file:///tmp/spark-events
    python -m bench.spark_profile --event-log /tmp/spark-events/local-... [--top 40]

A job line: wall seconds, the bench stage that ran it (the `bench.stage` local property), its
call site in the project's code. A stage line: tasks, wall seconds, summed executor run and CPU
seconds, shuffle read/write MB, spill MB, Python UDF seconds where Spark reports them.
"""
from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from jobs.lib.config import parse_config

_METRICS = {  # accumulable name -> (column, scale)
    "internal.metrics.executorRunTime": ("run_s", 1e-3),
    "internal.metrics.executorCpuTime": ("cpu_s", 1e-9),
    "internal.metrics.shuffle.read.localBytesRead": ("shuf_rd_mb", 1e-6),
    "internal.metrics.shuffle.read.remoteBytesRead": ("shuf_rd_mb", 1e-6),
    "internal.metrics.shuffle.write.bytesWritten": ("shuf_wr_mb", 1e-6),
    "internal.metrics.memoryBytesSpilled": ("spill_mb", 1e-6),
    "internal.metrics.diskBytesSpilled": ("spill_disk_mb", 1e-6),
    "internal.metrics.input.recordsRead": ("in_rows", 1),
    "internal.metrics.jvmGCTime": ("gc_s", 1e-3),
}


def _lines(path: Path):
    """The JSON lines of an event log: a file (plain or .zstd, Spark 4's default) or a rolling
    log directory (eventlog_v2_*) of such files."""
    import pyarrow as pa

    files = sorted(path.glob("events_*"), key=lambda f: int(f.name.split("_")[1])) if path.is_dir() else [path]
    for f in files:
        raw = pa.CompressedInputStream(pa.OSFile(str(f)), "zstd") if f.suffix == ".zstd" else pa.OSFile(str(f))
        with raw:
            yield from io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")


_PLUMBING = ("WholeStageCodegen", "AdaptiveSparkPlan", "MapPartitionsRDD", "ShuffledRowRDD", "FileScanRDD")


def _operators(info: dict) -> str:
    """The physical operators a stage ran (its RDDs' scopes), plumbing left out."""
    names = []
    for r in info.get("RDD Info", []):
        try:
            name = json.loads(r.get("Scope") or "{}").get("name", "")
        except ValueError:
            name = ""
        name = name.strip()
        if name and not name.startswith(_PLUMBING) and name not in names:
            names.append(name)
    return ",".join(names)


def read_log(path: Path) -> tuple[dict, dict, dict]:
    """(SQL executions, jobs, stages) keyed by id, from a Spark JSON event log."""
    execs, jobs, stages = {}, {}, {}
    if True:
        for line in _lines(path):
            e = json.loads(line)
            kind = e["Event"]
            if kind.endswith("SparkListenerSQLExecutionStart"):
                execs[e["executionId"]] = {"start": e["time"], "desc": e.get("description", ""), "jobs": []}
            elif kind.endswith("SparkListenerSQLExecutionEnd") and e["executionId"] in execs:
                execs[e["executionId"]]["end"] = e["time"]
            elif kind == "SparkListenerJobStart":
                props = e.get("Properties") or {}
                jobs[e["Job ID"]] = {"start": e["Submission Time"], "stages": e["Stage IDs"],
                                     "site": props.get("callSite.short", ""),
                                     "bench": props.get("bench.stage", "")}
                xid = props.get("spark.sql.execution.root.id") or props.get("spark.sql.execution.id")
                if xid is not None and int(xid) in execs:
                    execs[int(xid)]["jobs"].append(e["Job ID"])
            elif kind == "SparkListenerJobEnd":
                jobs[e["Job ID"]]["end"] = e["Completion Time"]
            elif kind == "SparkListenerStageCompleted":
                info = e["Stage Info"]
                m = defaultdict(float)
                for a in info.get("Accumulables", []):
                    name = a.get("Name", "")
                    if name in _METRICS:
                        col, scale = _METRICS[name]
                        m[col] += float(a["Value"]) * scale
                    elif "python" in name.lower() and "time" in name.lower():
                        m["python_s"] += float(a["Value"]) * 1e-3  # SQL metric in ms
                stages[info["Stage ID"]] = {"name": _operators(info) or info["Stage Name"], "tasks": info["Number of Tasks"],
                                            "wall_s": (info.get("Completion Time", 0) - info.get("Submission Time", 0)) / 1e3,
                                            "skipped": "Submission Time" not in info, **m}
    return execs, jobs, stages


def summarize(path: Path, top: int = 40) -> None:
    execs, jobs, stages = read_log(path)
    print("SQL executions in order (one per DataFrame action): seconds, bench stage, jobs, tasks, "
          "summed task run seconds, action")
    for xid, x in sorted(execs.items()):
        js = [jobs[j] for j in x["jobs"] if j in jobs]
        sts = [stages[s] for j in js for s in j["stages"] if s in stages and not stages[s]["skipped"]]
        bench = next((j["bench"] for j in js if j["bench"]), "")
        print(f"  exec {xid:<4} {(x.get('end', x['start']) - x['start']) / 1e3:>7.1f}s {bench or '-':<9} "
              f"{len(js):>3} jobs {sum(s['tasks'] for s in sts):>5} tasks {sum(s.get('run_s', 0) for s in sts):>7.1f}s  "
              f"{x['desc'][:70]}")
    print()
    per_bench = defaultdict(lambda: [0.0, 0])
    rows = []
    for jid, j in sorted(jobs.items()):
        dt = (j.get("end", j["start"]) - j["start"]) / 1e3
        per_bench[j["bench"]][0] += dt
        per_bench[j["bench"]][1] += 1
        rows.append((dt, jid, j))
    print("bench stage: jobs, summed job seconds")
    for name, (s, n) in per_bench.items():
        print(f"  {name or '-':<10} {n:>4} jobs {s:>8.1f}s")
    print(f"\nslowest {top} jobs (seconds, id, bench stage, call site), then their stages:")
    for dt, jid, j in sorted(rows, key=lambda r: -r[0])[:top]:
        print(f"{dt:8.1f}s job {jid:<4} {j['bench']:<9} {j['site']}")
        for sid in j["stages"]:
            s = stages.get(sid)
            if s is None or s["skipped"]:
                continue
            extra = " ".join(f"{k}={v:.1f}" for k, v in s.items()
                             if k not in ("name", "tasks", "wall_s", "skipped") and v)
            print(f"           stage {sid:<4} {s['tasks']:>4} tasks {s['wall_s']:>7.1f}s  {s['name'][:60]:<60} {extra}")


@dataclass(frozen=True)
class SparkProfileConfig:
    event_log: str = field(metadata={"help": "a Spark event log (spark.eventLog.dir's file)"})
    top: int = field(default=40, metadata={"help": "jobs listed, longest first"})


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(SparkProfileConfig, argv, __doc__.splitlines()[0])
    summarize(Path(cfg.event_log), cfg.top)


if __name__ == "__main__":
    main()
