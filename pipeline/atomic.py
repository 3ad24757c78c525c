"""Atomic local writes: every output file or directory is written under a hidden temporary
sibling and renamed into place, so a killed writer never leaves something that looks complete.

    with atomic_path(out / "model.safetensors") as tmp:   # a file: write to tmp
        save_file(state, str(tmp))
    write_text_atomic(out / "result.json", text)
    with atomic_dir(out / "card") as tmp:                  # a directory: fill tmp, replaces out

Temporary names are `.<name>.<pid>-<random>.tmp` (unique per writer: speculative or duplicated
writers never share one) and are removed when the write fails. What a killed `atomic_dir` left
is removed by the next `atomic_dir` into the same path (a killed `atomic_path`'s file stays: a
live writer of the same file may own it; jobs/shards.py removes its own). Outputs on Hadoop
paths (HDFS, object stores) go through jobs/lib/output.py instead.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_sibling(path: str | os.PathLike, kind: str = "tmp") -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path` (os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when the write failed


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def clean_dir_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of directory `path` that killed `atomic_dir` runs left;
    returns them. A run killed between its two renames leaves no `path` but the previous one as
    `.<name>.*.old`: it is renamed back to `path` (the last complete output) first."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.\d+-[0-9a-f]{{8}}\.(tmp|old)")
    try:
        left = sorted((p for p in path.parent.iterdir() if pattern.fullmatch(p.name)),
                      key=lambda p: p.lstat().st_mtime_ns)
    except FileNotFoundError:
        return []
    olds = [p for p in left if p.suffix == ".old"]
    if olds and not path.exists():
        olds[-1].rename(path)
        left.remove(olds[-1])
    for p in left:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return left


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it takes `path`'s place
    (a previous `path` is moved aside first and deleted after).

    First removes what killed runs into `path` left (`clean_dir_leftovers`). Two concurrent
    runs into one path are not supported: each would remove the other's temporary directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_dir_leftovers(path)
    tmp, old = temp_sibling(path), temp_sibling(path, "old")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
