"""Tar members of a shard, safely: every name checked before its bytes are used, nothing unpickled.

The sample layer (pipeline/wds.py) groups these members into samples; this module knows only
names and bytes. Unsafe members (absolute or `..` paths, pickles, links and other non-files) and
damaged tars are a ShardError naming the shard and the member.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath
from typing import Iterator

FORBIDDEN_SUFFIXES = (".pyd", ".pkl", ".pickle")
_BLOCK = 512
_USTAR_MAGIC = b"ustar\x0000"  # POSIX ustar magic + version, as add_member (and pax for short names) writes


class ShardError(ValueError):
    """A shard that must not be read (unsafe member) or is damaged."""


def check_member(shard: str, name: str) -> None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith("/"):
        raise ShardError(f"{shard}: refusing tar member with an unsafe path: {name!r}")
    if p.suffix.lower() in FORBIDDEN_SUFFIXES:
        raise ShardError(f"{shard}: refusing pickle member {name!r} (shards are never unpickled)")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A regular file whose header carries no time, owner or mode of this machine."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o444, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def iter_members(shard: str, f) -> Iterator[tuple[str, bytes]]:
    """(name, data) of a tar's regular files, read once, sequentially (streams need no seeking).
    Plain POSIX ustar headers of regular files (what add_member writes) are parsed here, which
    skips tarfile's per-member cost (most of reading a shard without decoding it, e.g. when a
    resumed reader refills its window); from the first header of any other kind (pax, GNU, links,
    compressed files) tarfile reads the rest."""
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


def member_spans(shard: str) -> Iterator[tuple[str, tuple[int, int]]]:
    """(name, (data offset, size)) of an uncompressed tar's regular files: random access to
    members without reading them (the FFCV writer's indexed dataset)."""
    try:
        with tarfile.open(shard, "r:") as tar:
            for m in tar:
                check_member(shard, m.name)
                if not m.isfile():
                    raise ShardError(f"{shard}: refusing non-file tar member {m.name!r}")
                yield m.name, (m.offset_data, m.size)
    except tarfile.TarError as e:
        raise ShardError(f"{shard}: damaged tar: {e}") from e


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
