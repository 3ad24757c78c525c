"""The one image reader: a manifest's image references -> bytes, from wherever they lie (no Spark).

A reference (the manifest's `image` value) is one of
- encoded bytes (img2dataset's parquet format, a table with an image column), used as they are;
- a local path (relative ones resolve against `image_root`, itself a path or a URL) or `file://`;
- an object-store or web URL: `s3://` (and `s3a://`; AWS, MinIO, Ceph: AWS_ENDPOINT_URL),
  `gs://`, `az://` / `abfs://` / `abfss://`, `http://` / `https://`, read through fsspec
  (the extras `pip install hashtag-pretrain[s3|gcs|azure|http]` bring s3fs, gcsfs, adlfs, aiohttp);
- a member of a tar shard, `TAR#offset=O&size=N&member=NAME` (`tar_member`), where TAR is any of
  the above: one range read of the member's N bytes at byte O, recorded at ingest; the tar is
  never read from its start and never copied.

`read_images` reads a batch: local files one after the other (as fast as before), remote ones
concurrently through fsspec's async `cat_ranges` (at most `ReadPolicy.concurrency` requests in
flight per process), so a store's per-request latency is hidden. Transient failures (HTTP 408,
429 and 5xx, S3 SlowDown, timeouts, resets) are retried with jittered exponential backoff and
counted; what stays failed is an ImageRejected: `missing_file` (not found), `access_denied`,
`unreachable` (transient until the last attempt), `truncated` (a member shorter than recorded) or
`read_error` (any other refusal, e.g. HTTP 400).
A library an URL needs and that is not installed is a ReaderSetupError for the whole job, not a
reject per image.

Credentials come from where each library reads them (AWS_* variables, AWS_ENDPOINT_URL[_S3],
GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*, fsspec's FSSPEC_<PROTOCOL>_<KEY> config); this
module never logs or returns them. Every message it makes names the reference through `redact`:
no user:password and no query string (a signed URL's signature) leaves it.
"""
from __future__ import annotations

import asyncio
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from pipeline.images import ImageRejected

# scheme -> (fsspec protocol, the extra that installs it)
REMOTE = {"s3": ("s3", "s3"), "s3a": ("s3", "s3"), "gs": ("gcs", "gcs"), "gcs": ("gcs", "gcs"),
          "az": ("abfs", "azure"), "abfs": ("abfs", "azure"), "abfss": ("abfs", "azure"),
          "http": ("http", "http"), "https": ("http", "http")}
_MEMBER = re.compile(r"^(?P<tar>.+)#offset=(?P<offset>\d+)&size=(?P<size>\d+)(?:&member=(?P<member>.*))?$", re.S)
_QUERY_IN_TEXT = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"?#]*)\?[^\s'\")]*")
_USERINFO_IN_TEXT = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/'\"@]*@")
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_WORDS = ("SlowDown", "Throttl", "RequestTimeout", "InternalError", "ServiceUnavailable",
                    "reset by peer", "timed out", "Timeout", "Connection aborted", "ServerDisconnected",
                    "Broken pipe", "Too Many Requests")


class ReaderSetupError(RuntimeError):
    """A reference this process cannot read at all (its fsspec implementation is not installed)."""


@dataclass(frozen=True)
class ReadPolicy:
    concurrency: int = 32     # remote requests in flight per process (one batch)
    batch: int = 256          # references fetched together (bounds the bytes held at once)
    attempts: int = 4         # tries of a transiently failing read, the first included
    backoff_s: float = 0.25   # first retry after about this; doubled each time, jittered
    max_backoff_s: float = 8.0
    timeout_s: float = 60.0   # connect / read timeout of one HTTP request

    def __post_init__(self):
        if self.concurrency < 1 or self.batch < 1 or self.attempts < 1:
            raise ValueError("concurrency, batch and attempts must be >= 1")


@dataclass(frozen=True)
class Location:
    """Where a reference's bytes are: a local path or a (protocol, URL); a byte range or the whole."""
    protocol: str             # "local" or an fsspec protocol of REMOTE
    path: str                 # local path, or the URL as fsspec takes it
    offset: int | None = None
    size: int | None = None
    shown: str = ""           # the reference as messages name it (redacted)


def tar_member(tar: str, offset: int, size: int, member: str = "") -> str:
    """The reference of a tar member's bytes: `size` bytes at byte `offset` of the tar `tar`."""
    return f"{tar}#offset={int(offset)}&size={int(size)}" + (f"&member={member}" if member else "")


def redact(ref: str) -> str:
    """`ref` fit to print: a URL without user:password and query string (a signed URL's
    signature); the query becomes `?...`. Paths and tar-member fragments are kept."""
    s = str(ref)
    u = urlsplit(s)
    if not u.scheme or len(u.scheme) == 1:
        return s
    netloc = u.netloc.rsplit("@", 1)[-1]
    return urlunsplit((u.scheme, netloc, u.path, "..." if u.query else "", u.fragment))


def scrub(text: str) -> str:
    """Free text (an exception's message) with any URL's user:password@ removed and its query
    string replaced by `...`."""
    return _QUERY_IN_TEXT.sub(r"\1?...", _USERINFO_IN_TEXT.sub(r"\1", text))


def locate(ref, image_root: str | None = None) -> Location:
    """The Location of a string reference (see the module docstring). An empty reference or an
    unknown scheme is ImageRejected('missing_file')."""
    if ref is None or ref == "":
        raise ImageRejected("missing_file", "empty image reference")
    s, offset, size = str(ref), None, None
    m = _MEMBER.match(s)
    if m:
        s, offset, size = m["tar"], int(m["offset"]), int(m["size"])
    u = urlsplit(s)
    scheme = u.scheme.lower()
    shown = redact(str(ref))
    if scheme == "file":
        return Location("local", unquote(u.path), offset, size, shown)
    if scheme in REMOTE:
        return Location(REMOTE[scheme][0], s, offset, size, shown)
    if scheme and len(scheme) > 1:
        raise ImageRejected("missing_file", f"unsupported URI scheme {scheme!r} in {shown}")
    if not os.path.isabs(s) and image_root:
        root = str(image_root)
        joined = root.rstrip("/") + "/" + s if urlsplit(root).scheme.lower() in REMOTE else str(Path(root) / s)
        return locate(tar_member(joined, offset, size, m["member"] or "") if m else joined)
    return Location("local", s, offset, size, shown)


def read_images(refs: Sequence, image_root: str | None = None,
                policy: ReadPolicy = ReadPolicy()) -> tuple[list, int]:
    """([bytes or ImageRejected per reference, in order], retries made). Bytes references are
    returned as they are."""
    out: list = [None] * len(refs)
    remote: dict[str, list[tuple[int, Location]]] = {}
    for i, ref in enumerate(refs):
        if isinstance(ref, (bytes, bytearray, memoryview)):
            out[i] = bytes(ref)
            continue
        try:
            loc = locate(ref, image_root)
        except ImageRejected as e:
            out[i] = e
            continue
        if loc.protocol == "local":
            out[i] = _read_local(loc)
        else:
            remote.setdefault(loc.protocol, []).append((i, loc))
    retries = 0
    for protocol, items in remote.items():
        for k in range(0, len(items), policy.batch):
            chunk = items[k:k + policy.batch]
            got, r = _read_remote(protocol, [loc for _, loc in chunk], policy)
            retries += r
            for (i, _), value in zip(chunk, got):
                out[i] = value
    return out, retries


def iter_images(refs: Sequence, image_root: str | None = None,
                policy: ReadPolicy = ReadPolicy()) -> Iterator[tuple[object, int]]:
    """(bytes or ImageRejected, retries of its batch or 0) per reference, in order, reading
    batches of `batch_spans` (up to `policy.batch` references), the next batch fetched by a
    thread while the caller works through this one (a store's latency overlaps the decoding): a
    writer holds at most two batches of bytes, not a shard's."""
    spans = batch_spans(len(refs), policy)
    if len(spans) <= 1:
        batches = iter([read_images(refs, image_root, policy)] if refs else [])
    else:
        batches = _prefetched(lambda span: read_images(refs[span[0]:span[1]], image_root, policy), spans)
    for got, retries in batches:
        for j, value in enumerate(got):
            yield value, retries if j == 0 else 0


def batch_spans(n: int, policy: ReadPolicy) -> list[tuple[int, int]]:
    """(start, end) of iter_images' batches of n references: the first is `policy.concurrency`
    long (one round of requests, so the caller starts work after one latency), each next one
    twice the last, up to `policy.batch`."""
    spans, start, size = [], 0, min(policy.concurrency, policy.batch)
    while start < n:
        spans.append((start, min(n, start + size)))
        start, size = start + size, min(policy.batch, 2 * size)
    return spans


def _prefetched(fetch, keys) -> Iterator:
    """fetch(k) for each of `keys` in order, the next one running in a thread meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="image-prefetch") as pool:
        pending = None
        for k in keys:
            nxt = pool.submit(fetch, k)
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()


def read_image(ref, image_root: str | None = None, policy: ReadPolicy = ReadPolicy()) -> bytes:
    """One reference's bytes, or raise its ImageRejected."""
    (value,), _ = read_images([ref], image_root, policy)
    if isinstance(value, ImageRejected):
        raise value
    return value


def _read_local(loc: Location):
    try:
        with open(loc.path, "rb") as f:
            if loc.offset is None:
                return f.read()
            f.seek(loc.offset)
            data = f.read(loc.size)
    except OSError as e:
        return ImageRejected("missing_file", f"{loc.shown}: {e.strerror or e}")
    if len(data) != loc.size:
        return ImageRejected("truncated", f"{loc.shown}: {len(data)} of {loc.size} bytes")
    return data


def _read_remote(protocol: str, locs: list[Location], policy: ReadPolicy) -> tuple[list, int]:
    fs = filesystem(protocol, policy.timeout_s)
    out: list = [None] * len(locs)
    todo, retries = list(range(len(locs))), 0
    for attempt in range(policy.attempts):
        if attempt:
            time.sleep(min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random()))
        paths = [locs[i].path for i in todo]
        starts = [locs[i].offset for i in todo]
        ends = [None if locs[i].offset is None else locs[i].offset + locs[i].size for i in todo]
        got = fs.cat_ranges(paths, starts, ends, on_error="return", batch_size=policy.concurrency)
        again = []
        for i, value in zip(todo, got):
            result = _outcome(locs[i], value, last=attempt == policy.attempts - 1)
            if result is _RETRY:
                again.append(i)
            else:
                out[i] = result
        retries += len(again)
        todo = again
        if not todo:
            break
    return out, retries


_RETRY = object()


def _outcome(loc: Location, value, last: bool):
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        if loc.size is None:
            return data
        if len(data) > loc.size and len(data) >= loc.offset + loc.size:  # a server that ignored Range
            data = data[loc.offset:loc.offset + loc.size]
        if len(data) != loc.size:
            return ImageRejected("truncated", f"{loc.shown}: {len(data)} of {loc.size} bytes")
        return data
    reason, detail = classify(value)
    if reason == "transient":
        return ImageRejected("unreachable", f"{loc.shown}: {detail}") if last else _RETRY
    return ImageRejected(reason, f"{loc.shown}: {detail}")


def classify(exc: BaseException) -> tuple[str, str]:
    """(reason, detail) of a failed read: 'transient' (retry it), or an ImageRejected reason.
    The detail is scrubbed of query strings."""
    status = getattr(exc, "status", None)
    if not isinstance(status, int):
        status = None
    name = type(exc).__name__
    detail = scrub(f"HTTP {status}" if status is not None else f"{name}: {exc}")[:300]
    if isinstance(exc, FileNotFoundError) or status in (404, 410):  # the message repeats the URL: not shown
        return "missing_file", f"HTTP {status}" if status else "not found"
    if isinstance(exc, PermissionError) or status in (401, 403):
        return "access_denied", f"HTTP {status}" if status else "access denied"
    if status in _TRANSIENT_STATUS or isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return "transient", detail
    if status is None and any(w.lower() in f"{name} {exc}".lower() for w in _TRANSIENT_WORDS):
        return "transient", detail
    try:
        import aiohttp
        if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
            return "transient", detail
    except ImportError:
        pass
    return ("transient" if status is not None and status >= 500 else "read_error"), detail


_FILESYSTEMS: dict = {}


def filesystem(protocol: str, timeout_s: float = 60.0):
    """This process's fsspec filesystem for `protocol` (one per process and timeout). S3 takes
    its endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL when set (MinIO, Ceph, a test
    server); everything else from the library's own configuration."""
    key = (protocol, timeout_s, os.getpid(), _s3_endpoint() if protocol == "s3" else None)
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = _make_filesystem(protocol, timeout_s)
    return _FILESYSTEMS[key]


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _make_filesystem(protocol: str, timeout_s: float):
    import fsspec
    extra = next(e for p, e in REMOTE.values() if p == protocol)
    kwargs: dict = {}
    try:
        if protocol == "http":
            import aiohttp
            kwargs["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout_s,
                                                                        sock_read=timeout_s)}
        elif protocol == "s3":
            # one GET per object: with more, s3fs asks each object's size first (a HEAD: twice the
            # latency) to split large objects; images are small and the batch is concurrent already
            kwargs["max_concurrency"] = 1
            endpoint = _s3_endpoint()
            if endpoint:
                kwargs["endpoint_url"] = endpoint
        return fsspec.filesystem(protocol, **kwargs)
    except ImportError as e:
        raise ReaderSetupError(f"reading {protocol}:// images needs the '{extra}' extra "
                               f"(pip install 'hashtag-pretrain[{extra}]'): {e}") from None


def url_to_fs(url: str):
    """(fsspec filesystem, path) of a local path or URL, remote ones configured as the image reads."""
    import fsspec
    scheme = urlsplit(url).scheme.lower()
    if scheme in REMOTE:
        return filesystem(REMOTE[scheme][0]), url
    return fsspec.core.url_to_fs(url)


def is_remote(url: str) -> bool:
    """Whether `url` is one of the REMOTE schemes (read through fsspec, not Spark's file systems)."""
    return urlsplit(str(url)).scheme.lower() in REMOTE


def open_input(url: str, mode: str = "rb", **kwargs):
    """An fsspec file object for a whole input file (a table, a tar to index), local or remote,
    with the same configuration as the image reads; `kwargs` go to fsspec's open (e.g.
    compression="infer")."""
    import fsspec
    scheme = urlsplit(url).scheme.lower()
    if scheme in REMOTE:
        fs = filesystem(REMOTE[scheme][0])
        return fs.open(url, mode, **kwargs)
    return fsspec.open(url, mode, **kwargs).open()
