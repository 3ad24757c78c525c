"""Atomic local writes: every output file or directory is written under a hidden temporary
sibling and renamed into place, so a killed writer never leaves something that looks complete.

    with atomic_path(out / "model.safetensors") as tmp:   # a file: write to tmp
        save_file(state, str(tmp))
    write_text_atomic(out / "result.json", text)
    with atomic_dir(out / "card") as tmp:                  # a directory: fill tmp, replaces out

Temporary names are `.<name>.<pid>-<random>.tmp` (unique per writer: speculative or duplicated
writers never share one) and are removed when the write fails. Outputs on Hadoop paths (HDFS,
object stores) go through jobs/lib/output.py instead.
"""
from __future__ import annotations

import os
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it takes `path`'s place
    (a previous `path` is moved aside first and deleted after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
