"""WebDataset tar shards: deterministic, atomic writing and a reader that refuses unsafe members.

A shard holds `<key>.jpg` + `<key>.json` per sample. Tar headers carry no time, owner or mode of
this machine, so the same samples always give the same bytes (and the same sha256).
"""
from __future__ import annotations

import contextlib
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
    (links, devices, directories) are refused too. The file is read once, sequentially (works on
    streams without seeking).
    """
    shard = str(path)
    current, parts = None, {}
    with (open(shard, "rb") if fileobj is None else contextlib.nullcontext(fileobj)) as f:
        for name, data in _members(shard, f):
            check_member(shard, name)
            key, _, ext = name.partition(".")
            if key != current:
                if current is not None:
                    yield current, parts
                current, parts = key, {}
            parts[ext] = data
    if current is not None:
        yield current, parts


_BLOCK = 512
_USTAR_MAGIC = b"ustar\x0000"  # POSIX ustar magic + version, as write_shard (and pax for short names) writes


def _members(shard: str, f) -> Iterator[tuple[str, bytes]]:
    """(name, data) of a tar's regular files. Plain POSIX ustar headers of regular files (what
    write_shard writes) are parsed here, which skips tarfile's per-member cost (most of reading a
    shard without decoding it, e.g. when a resumed reader refills its window); from the first
    header of any other kind (pax, GNU, links, compressed files) tarfile reads the rest."""
    while True:
        head = f.read(_BLOCK)
        if not head.strip(b"\0"):
            return  # end-of-archive block(s), or a stream ending at a member boundary
        if len(head) < _BLOCK or head[257:265] != _USTAR_MAGIC or head[156:157] not in (b"0", b"\0") or head[124] & 0x80:
            yield from _tarfile_members(shard, _Prepended(head, f))
            return
        try:
            chksum = int(head[148:156].strip(b"\0 ") or b"0", 8)
            size = int(head[124:136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            chksum = size = -1
        if size < 0 or chksum != sum(head) - sum(head[148:156]) + 8 * 32:  # tarfile says what is wrong
            yield from _tarfile_members(shard, _Prepended(head, f))
            return
        name = head[0:100].split(b"\0", 1)[0]
        prefix = head[345:500].split(b"\0", 1)[0]
        try:
            name = (prefix + b"/" + name if prefix else name).decode("utf-8")
        except UnicodeDecodeError:
            raise ShardError(f"{shard}: tar member name is not UTF-8: {name!r}") from None
        check_member(shard, name)
        data = f.read(size)
        if len(data) < size:
            raise ShardError(f"{shard}: member {name!r} truncated ({len(data)} of {size} bytes)")
        pad = -size % _BLOCK
        if pad and len(f.read(pad)) < pad:
            raise ShardError(f"{shard}: member {name!r} truncated (padding)")
        yield name, data


def _tarfile_members(shard: str, stream) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for m in tar:
                check_member(shard, m.name)
                if not m.isfile():
                    raise ShardError(f"{shard}: refusing non-file tar member {m.name!r}")
                yield m.name, tar.extractfile(m).read()
    except tarfile.TarError as e:
        raise ShardError(f"{shard}: damaged tar: {e}") from e


class _Prepended(io.RawIOBase):
    """A read-only stream: `head`, then the rest of `f` (tarfile takes over mid-file)."""

    def __init__(self, head: bytes, f):
        self.head, self.f = head, f

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.f.read(n)
        if n is None or n < 0:
            out, self.head = self.head + self.f.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        if len(out) < n:
            out += self.f.read(n - len(out))
        return out
