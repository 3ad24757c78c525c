"""Per-format logic of the ingest job (jobs/ingest.py), as plain Python: field layouts, column maps,
Spark SQL expressions as strings (the job applies them with `F.expr`, so parsing runs in the JVM,
never in Python per row), and the indexing of tar shards and image folders that one Spark task
does per shard. Shared here: SQL quoting and the drop reasons every format counts.
"""
from __future__ import annotations

# a row is dropped for the first of its reasons (each format lists its own, in order)
EMPTY_ID = "empty_id"                # no id (or an empty one)
EMPTY_IMAGE = "empty_image"          # no image reference (or bytes)
NO_TAGS_OR_TEXT = "no_tags_or_text"  # neither a hashtag nor a caption/text left
DUPLICATE_ID = "duplicate_id"        # another row has the same image_id (one is kept)
DUPLICATE_IMAGE = "duplicate_image"  # another row has the same image reference (ids hashed from it)


def sql_str(s: str) -> str:
    """A Spark SQL string literal of `s`."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_col(name: str) -> str:
    """A Spark SQL column reference of the column named `name` (any characters)."""
    return "`" + name.replace("`", "``") + "`"


def split_sql(expr: str, sep: str) -> str:
    """`expr` split on the literal separator `sep` (split takes a Java regex: \\Q..\\E quotes it)."""
    if not sep:
        raise ValueError("empty separator")
    return f"split(coalesce({expr}, ''), {sql_str(chr(92) + 'Q' + sep + chr(92) + 'E')}, -1)"


def clean_list_sql(expr: str) -> str:
    """A list of strings without nulls, surrounding blanks and empty strings."""
    return f"filter(transform({expr}, t -> trim(t)), t -> t is not null and t != '')"


def text_or_null_sql(expr: str) -> str:
    """A string trimmed, or null when nothing is left."""
    return f"nullif(trim({expr}), '')"
