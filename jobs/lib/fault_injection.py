"""Test-only: fault injection in the jobs' per-partition functions (the jobs' failure report is
jobs/lib/errors.py).

Injection is inert unless HASHTAG_TEST_FAULTS is set in the executors' environment, which only
the reliability tests do (tests/spark/test_reliability_spark.py); production never sets it. Its value
is comma-separated faults, each `KIND:WHERE[:KEY]`:

    fail_first_attempt:WHERE       the first attempt of each task running WHERE raises (Spark retries it)
    stall_first_attempt:WHERE:KEY  the first attempt of the task for KEY (e.g. a shard) never ends:
                                   only a speculative copy or the loss of its executor ends it

With HASHTAG_TEST_FAULTS_LOG set (a directory on a filesystem all executors share), each fault
fires once per WHERE and KEY (the partition by default) and leaves a file `WHERE-KEY-attempt0`
there holding the Python worker's pid, so a test can check that it happened or kill the executor.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

ENV, LOG_ENV = "HASHTAG_TEST_FAULTS", "HASHTAG_TEST_FAULTS_LOG"


def inject(where: str, key=None) -> None:
    """Called by per-partition functions at the point named `where`; does nothing in production."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None or ctx.attemptNumber() != 0:
        return
    key = ctx.partitionId() if key is None else key
    for fault in spec.split(","):
        kind, _, rest = fault.partition(":")
        target, _, want = rest.partition(":")
        if target != where or (want and want != str(key)) or not _first_time(where, key):
            continue
        if kind == "fail_first_attempt":
            raise RuntimeError(f"injected test fault ({ENV}): {where}, key {key}, attempt 0")
        if kind == "stall_first_attempt":
            while True:  # killed when the speculative copy succeeds, or with the application
                time.sleep(1)


def _first_time(where: str, key) -> bool:
    """Records the fault in the log directory; False if it already fired in this application (a
    stage resubmitted after a lost executor, or recomputed after a lost cache block, starts its
    tasks at attempt 0 again)."""
    d = os.environ.get(LOG_ENV)
    if not d:
        return True
    Path(d).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(Path(d) / f"{where}-{key}-attempt0", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))  # this Python worker
    return True
