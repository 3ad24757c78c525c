"""A table of images (Parquet, CSV/TSV, JSON Lines) mapped onto the manifest's columns.

The flags name the source column of each manifest column (`--id`, `--image`, `--tags`,
`--caption`, `--text`); `--columns` names a headerless CSV/TSV's columns by position (CC12M:
`image,caption`; CC3M: `caption,image`). Without `--id`, an image's id is a hash of its reference
(the first 24 hex digits of SHA-1: 96 bits), so two rows of one reference are one image.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from pipeline.ingest import clean_list_sql, split_sql, sql_col

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
             ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
_COMPRESSION = (".gz", ".bz2", ".zst", ".snappy", ".lz4", ".deflate")
ID_HEX_DIGITS = 24
# manifest column <- the flag naming its source column (a flag left out: the column of that name)
ROLES = {"image_id": "id", "image": "image", "hashtags": "tags", "caption": "caption", "text": "text"}


def table_format(path: str) -> str:
    """The format from the path's suffix (`.csv.gz` is csv); a ValueError when it says nothing."""
    name = PurePosixPath(path.rstrip("/")).name.lower()
    for c in _COMPRESSION:
        name = name.removesuffix(c)
    fmt = _SUFFIXES.get(PurePosixPath(name).suffix)
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the table's format from its name: pass --table-format "
                         f"({'|'.join(FORMATS)})")
    return fmt


def source_columns(columns: list[str], named: dict[str, str | None]) -> dict[str, str]:
    """{manifest column: source column} from the flags `named` ({flag: column or None}); a flag
    left out takes the source column of the manifest column's own name when there is one (not
    the id: without --id, ids are hashed from the image). A named column that is absent is a
    ValueError listing the columns."""
    out = {}
    for target, flag in ROLES.items():
        src = named.get(flag)
        if src is None:
            if target != "image_id" and target in columns:
                out[target] = target
            continue
        if src not in columns:
            raise ValueError(f"--{flag} {src}: no such column (columns: {', '.join(columns)})")
        out[target] = src
    if "image" not in out:
        raise ValueError(f"no image column: pass --image (columns: {', '.join(columns)})")
    if not {"hashtags", "caption", "text"} & set(out):
        raise ValueError(f"no hashtags, caption or text column: pass --tags, --caption or --text "
                         f"(columns: {', '.join(columns)})")
    return out


def tags_sql(column: str, is_list: bool, sep: str) -> str:
    """The hashtags of a source column: a list as it is, a string split on `sep`; blanks dropped."""
    c = sql_col(column)
    return clean_list_sql(c if is_list else split_sql(c, sep))


def hashed_id_sql(image_column: str) -> str:
    return f"substr(sha1({sql_col(image_column)}), 1, {ID_HEX_DIGITS})"
