"""Atomic job outputs through Hadoop's FileSystem API (local disk, HDFS, object stores alike).

A job writes everything into a hidden temporary sibling of its output directory and renames it
into place at the end, so a killed run never leaves a directory that looks complete and a rerun
replaces the previous output cleanly. A killed run's siblings (`.NAME.tmp-*`, `.NAME.old-*`) are
removed by the next run into the same output.
"""
from __future__ import annotations

import json
import re
import uuid
from contextlib import contextmanager


def _fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def part_files(spark, path: str, suffix: str = "") -> list[str]:
    """The data files under a table directory (or the file itself), as URIs, sorted: every file
    ending in `suffix` with no path component starting with `_` or `.` (Spark's _SUCCESS, hidden
    temporaries). One listing on the driver through Hadoop's file system, so any scheme Spark
    reads lists the same way."""
    root, fs = _fs(spark, path)
    prefix = fs.makeQualified(root).toString()
    files, it = [], fs.listFiles(root, True)
    while it.hasNext():
        p = it.next().getPath()
        rel = p.toString()[len(prefix):]
        if p.getName().endswith(suffix) and not any(part.startswith(("_", ".")) for part in rel.split("/") if part):
            files.append(p.toUri().toString())
    return sorted(files)


@contextmanager
def atomic_output(spark, out: str):
    """Yield a temporary directory URI; on success rename it to `out` (replacing it).

    First removes what killed runs into `out` left (see `clean_leftovers`). Two concurrent runs
    into one output are not supported: each would remove the other's temporary directory.
    """
    final, fs = _fs(spark, out)
    final = fs.makeQualified(final)
    clean_leftovers(spark, out)
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


def _leftover_name(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.(tmp|old)-[0-9a-f]{{12}}")


def clean_leftovers(spark, out: str) -> list[str]:
    """Remove the temporary siblings of `out` that killed runs left; returns their URIs.

    A run killed between its two renames leaves no `out` but the previous output as `.NAME.old-*`:
    that one is renamed back to `out` (the last complete output) before the rest is deleted.
    """
    final, fs = _fs(spark, out)
    final = fs.makeQualified(final)
    name, parent = final.getName(), final.getParent()
    jvm = spark.sparkContext._jvm
    glob = re.sub(r"([\\{}\[\]*?])", r"\\\1", name)  # Hadoop glob metacharacters taken literally
    found = fs.globStatus(jvm.org.apache.hadoop.fs.Path(parent, f".{glob}.*")) or []
    pattern = _leftover_name(name)
    left = [st.getPath() for st in sorted((st for st in found if pattern.fullmatch(st.getPath().getName())),
                                          key=lambda st: st.getModificationTime())]
    olds = [p for p in left if ".old-" in p.getName()]
    if olds and not fs.exists(final) and fs.rename(olds[-1], final):
        left.remove(olds[-1])
    for p in left:
        fs.delete(p, True)
    return [p.toString() for p in left]


def write_bytes(spark, path: str, data: bytes) -> None:
    p, fs = _fs(spark, path)
    stream = fs.create(p, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def write_text(spark, path: str, text: str) -> None:
    write_bytes(spark, path, text.encode("utf-8"))


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
