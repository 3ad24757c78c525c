"""WebDataset tar shards: deterministic, atomic writing and a reader that refuses unsafe members.

A shard holds `<key>.jpg` + `<key>.json` per sample. Tar headers carry no time, owner or mode of
this machine, so the same samples always give the same bytes (and the same sha256).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import PurePosixPath
from typing import Iterable, Iterator

from pipeline.atomic import atomic_path

FORBIDDEN_SUFFIXES = (".pyd", ".pkl", ".pickle")


class ShardError(ValueError):
    """A shard that must not be read (unsafe member) or is damaged."""


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o444, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | os.PathLike, samples: Iterable[tuple[str, bytes, dict]]) -> dict:
    """Write (key, jpeg, meta) samples to `path` atomically; {samples, bytes, sha256}.

    The tar is written under a unique temporary name and renamed, so a killed or duplicated
    (speculative) writer never leaves a partial file under the final name.
    """
    n = 0
    with atomic_path(path, fsync=True) as tmp:
        with open(tmp, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for key, jpeg, meta in samples:
                    _add(tar, f"{key}.jpg", jpeg)
                    _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                    n += 1
        digest = file_sha256(tmp)
        size = tmp.stat().st_size
    return {"samples": n, "bytes": size, "sha256": digest}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_member(shard: str, name: str) -> None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith("/"):
        raise ShardError(f"{shard}: refusing tar member with an unsafe path: {name!r}")
    if p.suffix.lower() in FORBIDDEN_SUFFIXES:
        raise ShardError(f"{shard}: refusing pickle member {name!r} (shards are never unpickled)")


def iter_shard(path: str | os.PathLike, fileobj=None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample, in file order; unsafe members raise ShardError.

    Every member name is checked before anything is yielded from it; non-file members
    (links, devices, directories) are refused too.
    """
    shard = str(path)
    current, parts = None, {}
    with tarfile.open(name=None if fileobj else shard, fileobj=fileobj, mode="r|*") as tar:
        for m in tar:
            check_member(shard, m.name)
            if not m.isfile():
                raise ShardError(f"{shard}: refusing non-file tar member {m.name!r}")
            key, _, ext = m.name.partition(".")
            if key != current:
                if current is not None:
                    yield current, parts
                current, parts = key, {}
            parts[ext] = tar.extractfile(m).read()
    if current is not None:
        yield current, parts
