"""A table in object storage or behind HTTP, read file by file with pyarrow through fsspec, the way
the ingest job reads it without Hadoop's connectors (no hadoop-aws on the classpath needed).

Each file is one task's work (a large single file is not split: split it for parallelism). A
CSV/TSV reads every field as a string, as Spark's CSV reader does without schema inference;
a TSV field is never quoted. The table's schema is the first file's (Parquet: its footer; CSV/TSV:
its header line, or `columns`; JSON Lines: its first block); other files are cast to it, a
column they lack is null, one they add is dropped.
"""
from __future__ import annotations

import io

import pyarrow as pa

from pipeline.image_reader import open_input, url_to_fs

_SCHEMA_BLOCK = 1 << 20  # bytes of the first JSON Lines file its schema is inferred from


def list_files(url: str) -> list[str]:
    """The data files of a remote table: the URL itself when it is a file, else every file under
    it whose name starts with neither `.` nor `_` (Spark's _SUCCESS, hidden temporaries), sorted."""
    fs, path = url_to_fs(url)
    if fs.isfile(path):
        return [url]
    scheme = url.split("://", 1)[0]
    names = sorted(p for p in fs.find(path) if not p.rsplit("/", 1)[-1].startswith((".", "_")))
    return [f"{scheme}://{p}" if not p.startswith(f"{scheme}://") else p for p in names]


def _opened(url: str):
    return open_input(url, compression="infer")


def read_file(url: str, fmt: str, columns: tuple[str, ...] = ()) -> pa.Table:
    """One file of the table as pyarrow reads it (see the module docstring)."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    with _opened(url) as f:
        if fmt == "parquet":
            return pq.read_table(f)
        if fmt == "jsonl":
            return pjson.read_json(f)
        data = f.read()
    names = _csv_names(data, fmt, columns)
    return pcsv.read_csv(io.BytesIO(data), read_options=pcsv.ReadOptions(column_names=names,
                                                                         skip_rows=0 if columns else 1),
                         parse_options=_csv_parse(fmt),
                         convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                             strings_can_be_null=False))


def schema_of(url: str, fmt: str, columns: tuple[str, ...] = ()) -> pa.Schema:
    """The table's schema, from its first file without reading all of it."""
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    with _opened(url) as f:
        if fmt == "parquet":
            return pq.read_schema(f)
        head = f.read(_SCHEMA_BLOCK)
    if fmt == "jsonl":
        head = head[:head.rfind(b"\n") + 1] or head
        return pjson.read_json(io.BytesIO(head)).schema
    return pa.schema([(n, pa.string()) for n in _csv_names(head, fmt, columns)])


def conform(t: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """`t` with `schema`'s columns in its order: cast, null where `t` lacks one."""
    cols = []
    for field in schema:
        if field.name in t.column_names:
            try:
                cols.append(t[field.name].cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ValueError(f"{where}: column {field.name!r} is {t[field.name].type}, "
                                 f"not {field.type} as in the table's first file: {e}") from None
        else:
            cols.append(pa.nulls(len(t), field.type))
    return pa.table(cols, schema=schema)


def _csv_parse(fmt: str):
    import pyarrow.csv as pcsv

    if fmt == "tsv":
        return pcsv.ParseOptions(delimiter="\t", quote_char=False)
    return pcsv.ParseOptions(delimiter=",")


def _csv_names(data: bytes, fmt: str, columns: tuple[str, ...]) -> list[str]:
    """Column names: the header line's, or `columns` then `_cK` for a headerless file's extra fields."""
    import pyarrow.csv as pcsv

    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    fields = pcsv.read_csv(io.BytesIO(first + b"\n"), read_options=pcsv.ReadOptions(autogenerate_column_names=True),
                           parse_options=_csv_parse(fmt)).column_names
    if not columns:
        header = pcsv.read_csv(io.BytesIO(first + b"\n"), parse_options=_csv_parse(fmt)).column_names
        return list(header)
    if len(columns) > len(fields):
        raise ValueError(f"--columns names {len(columns)} columns, the file has {len(fields)}")
    return [*columns, *(f"_c{k}" for k in range(len(columns), len(fields)))]
