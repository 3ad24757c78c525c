"""A job's failed Spark work as one line naming the job, stage, partition and cause (JobFailed);
every job runs its Spark actions inside `reported(job)`."""
from __future__ import annotations

import re
from contextlib import contextmanager


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
