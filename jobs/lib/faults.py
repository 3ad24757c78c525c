"""Test-only fault injection in the jobs' per-partition functions, and the jobs' failure report.

Injection is inert unless HASHTAG_TEST_FAULTS is set in the executors' environment, which only
the reliability tests do (tests/test_reliability_spark.py); production never sets it. Its value
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
import re
import time
from contextlib import contextmanager
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


class JobFailed(RuntimeError):
    """A job's Spark work failed; the message names the job, stage, partition and cause."""


_LOST = re.compile(r"Lost task (\d+)\.(\d+) in stage (\d+)\.(\d+) \(TID (\d+)\)[^:]*: ")
_MEMORY = ("MemoryError", "OutOfMemoryError", "Cannot allocate memory", "Python worker exited unexpectedly")


def describe_failure(job: str, e: BaseException) -> str | None:
    """A one-line account of a failed Spark task (job, stage, partition, attempt and the error:
    the Python exception's last line, or the JVM's), or None when `e` is not a task failure."""
    # a Python worker's error comes back as PythonException, whose JVM stack trace (the part
    # that names the stage and task) is kept aside; Py4JJavaError's text holds it all
    text = f"{e}\n{getattr(e, '_stackTrace', '') or ''}"
    lost = _LOST.search(text)
    if not lost:
        return None
    partition, attempt, stage, stage_attempt, tid = lost.groups()
    lines = [ln.strip() for ln in text[lost.end():].partition("\n\tat ")[0].splitlines() if ln.strip()]
    cause = lines[0] if lines else "unknown error"
    if "PythonException" in cause and len(lines) > 1:
        cause = lines[-1]  # the Python traceback's last line
    msg = (f"{job}: Spark stage {stage} (attempt {stage_attempt}) failed in partition {partition} "
           f"(task attempt {attempt}, TID {tid}): {cause[:500]}")
    if any(m in cause for m in _MEMORY):
        msg += (" -- a worker ran out of memory: give it more (spark.executor.pyspark.memory for Python "
                "workers, spark.executor.memory for executors) or split the input's largest rows")
    return msg + ". The output was not committed."


@contextmanager
def reported(job: str):
    """Re-raise a failed Spark task as JobFailed naming the job, stage and partition."""
    try:
        yield
    except Exception as e:
        msg = describe_failure(job, e)
        if msg is None:
            raise
        raise JobFailed(msg) from e
