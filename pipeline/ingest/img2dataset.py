"""img2dataset's output folders: which of its three formats a folder holds, and the indexing of
its shards (one Spark task per shard).

- webdataset: `NNNNN.tar` with `<key>.jpg` (`.txt`, `.json`) members, and `NNNNN.parquet`;
- parquet: `NNNNN.parquet` with the encoded image in a `jpg` column;
- files: folders `NNNNN/` of `<key>.jpg` (`.txt`, `.json`), and `NNNNN.parquet`.
Every `NNNNN.parquet` has one row per input row: key, status (success, failed_to_download,
failed_to_resize), error_message, caption, url, width, height, ... and the columns img2dataset
was told to keep (e.g. DataComp's uid).

A tar is indexed by walking its headers once (tarfile seeks over the data): each image member's
data offset and size make a `pipeline.image_reader.tar_member` reference, so the image is read
later with one range read and never copied. Unsafe members (absolute or `..` paths, links and
other non-files, pickles: pipeline.tar_members.check_member) are refused and counted, not fatal:
the row that names one is then counted as missing its member. A tar that cannot be read as a
tar fails the job naming it (tar_members.ShardError).
"""
from __future__ import annotations

import re
import tarfile
from pathlib import PurePosixPath
from typing import Iterator

from pipeline.image_reader import open_input, tar_member, url_to_fs
from pipeline.tar_members import ShardError, check_member

FORMATS = ("webdataset", "parquet", "files")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IMAGE_COLUMN = "jpg"  # the parquet format's image bytes
STATUSES = ("success", "failed_to_download", "failed_to_resize")
SUCCESS = "success"
MISSING_MEMBER = "missing_member"  # a success row whose image is not in its tar / folder
# index rows: (shard, key, member, offset, size, image, refused): `image` the manifest's reference
# (a tar_member reference, or a folder file's path/URL; offset and size null then); `refused`
# names why a member was refused (key and image null then), null otherwise
INDEX_SCHEMA = "shard string, key string, member string, offset long, size long, image string, refused string"
UNSAFE_MEMBER = "unsafe_member"
NOT_A_FILE = "not_a_file"
_SHARD = re.compile(r"^\d+$")


def status_reason(status: str | None) -> str:
    """The drop reason of a stats row's status (`status_other` for one img2dataset does not write)."""
    return f"status_{status}" if status in STATUSES else "status_other"


def status_reasons() -> tuple[str, ...]:
    return tuple(status_reason(s) for s in STATUSES if s != SUCCESS) + ("status_other",)


def status_reason_sql(status: str) -> str:
    known = ", ".join(f"'{s}'" for s in STATUSES if s != SUCCESS)
    return f"(CASE WHEN {status} IN ({known}) THEN concat('status_', {status}) ELSE 'status_other' END)"


def detect_format(entries: list[tuple[str, bool]]) -> str:
    """The format of a folder from its entries (name, is_dir): tars -> webdataset, numbered
    folders -> files, parquet files alone -> parquet."""
    names = {n for n, _ in entries}
    if any(n.endswith(".tar") for n in names):
        return "webdataset"
    if any(is_dir and _SHARD.match(n) for n, is_dir in entries):
        return "files"
    if any(n.endswith(".parquet") for n in names):
        return "parquet"
    raise ValueError("no img2dataset output here (no NNNNN.tar, NNNNN/ or NNNNN.parquet)")


def shard_files(entries: list[tuple[str, bool]], suffix: str) -> list[str]:
    """Names of the shard files (`NNNNN<suffix>`) among a folder's entries, sorted."""
    return sorted(n for n, is_dir in entries if not is_dir and n.endswith(suffix) and _SHARD.match(n[:-len(suffix)]))


def shard_dirs(entries: list[tuple[str, bool]]) -> list[str]:
    return sorted(n for n, is_dir in entries if is_dir and _SHARD.match(n))


def split_member(name: str) -> tuple[str, str]:
    """(key, suffix) of a member or file name: `dir/000001.jpg` -> ("000001", ".jpg")."""
    p = PurePosixPath(name)
    return p.name[:-len(p.suffix)] if p.suffix else p.name, p.suffix.lower()


def index_tar(tar_url: str, f, shard: str) -> Iterator[tuple]:
    """INDEX_SCHEMA rows of a tar (open file `f`) named `tar_url`: one per image member
    (offset = its data's byte offset in the tar), one per refused member."""
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for m in tar:
                try:
                    check_member(tar_url, m.name)
                except ShardError:
                    yield shard, None, m.name, None, None, None, UNSAFE_MEMBER
                    continue
                if not m.isfile():
                    yield shard, None, m.name, None, None, None, NOT_A_FILE
                    continue
                key, suffix = split_member(m.name)
                if suffix in IMAGE_SUFFIXES:
                    ref = tar_member(tar_url, m.offset_data, m.size, m.name)
                    yield shard, key, m.name, m.offset_data, m.size, ref, None
    except tarfile.TarError as e:
        raise ShardError(f"{tar_url}: damaged tar: {e}") from e


def index_tar_url(tar_url: str, shard: str) -> list[tuple]:
    """index_tar of the tar at `tar_url` (local or any URL open_input reads)."""
    with open_input(tar_url) as f:
        return list(index_tar(tar_url, f, shard))


def index_folder(folder_url: str, names: list[str], shard: str) -> Iterator[tuple]:
    """INDEX_SCHEMA rows of a files-format shard folder's file names (one per image file)."""
    for name in names:
        key, suffix = split_member(name)
        if suffix in IMAGE_SUFFIXES:
            yield shard, key, name, None, None, join_url(folder_url, name), None


def index_folder_url(folder_url: str, shard: str) -> list[tuple]:
    """index_folder of the folder at `folder_url` (local or any fsspec URL)."""
    return list(index_folder(folder_url, sorted(n for n, is_dir in list_entries(folder_url) if not is_dir), shard))


def list_entries(url: str) -> list[tuple[str, bool]]:
    """(name, is_dir) of a folder's entries, local or any fsspec URL."""
    fs, path = url_to_fs(url)
    return [(PurePosixPath(e["name"].rstrip("/")).name, e["type"] == "directory") for e in fs.ls(path, detail=True)]


def join_url(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name
