"""Atomic job outputs through Hadoop's FileSystem API (local disk, HDFS, object stores alike).

A job writes everything into a hidden temporary sibling of its output directory and renames it
into place at the end, so a killed run never leaves a directory that looks complete and a rerun
replaces the previous output cleanly.
"""
from __future__ import annotations

import json
import uuid
from contextlib import contextmanager


def _fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


@contextmanager
def atomic_output(spark, out: str):
    """Yield a temporary directory URI; on success rename it to `out` (replacing it)."""
    final, fs = _fs(spark, out)
    final = fs.makeQualified(final)
    tag = uuid.uuid4().hex[:12]
    tmp = final.getParent().suffix(f"/.{final.getName()}.tmp-{tag}")
    fs.mkdirs(final.getParent())
    try:
        yield tmp.toString()
    except BaseException:
        fs.delete(tmp, True)
        raise
    old = None
    if fs.exists(final):
        old = final.getParent().suffix(f"/.{final.getName()}.old-{tag}")
        if not fs.rename(final, old):
            raise OSError(f"cannot move the previous output {out} aside")
    if not fs.rename(tmp, final):
        raise OSError(f"cannot rename {tmp.toString()} to {out}")
    if old is not None:
        fs.delete(old, True)


def write_text(spark, path: str, text: str) -> None:
    p, fs = _fs(spark, path)
    stream = fs.create(p, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def write_json(spark, path: str, obj) -> None:
    write_text(spark, path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_text(spark, path: str) -> str:
    p, fs = _fs(spark, path)
    jvm = spark.sparkContext._jvm
    stream = fs.open(p)
    try:
        return jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
