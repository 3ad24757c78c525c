"""YFCC100M's metadata (headerless, tab-separated, one photo or video per line) as Spark SQL.

Two layouts, told apart per line by the number of fields: the 25-field one (yfcc100m_dataset,
with a line number and the photo hash first) and the older 23-field one (starting at the photo
id, without hash). Tags, machine tags, title and description are URL-encoded (`+` for a space);
`try_url_decode` decodes them (Java's URLDecoder: `+` -> space, `%xx` -> UTF-8 bytes) and gives
null for what does not decode (`%zz`, a lone `%`), which is counted and dropped per tag.
The autotags file is `photo id <TAB> tag:score,tag:score,...`.
"""
from __future__ import annotations

from pipeline.ingest import sql_str

FIELDS = ("line_number", "photo_id", "photo_hash", "user_nsid", "user_nickname", "date_taken", "date_uploaded",
          "device", "title", "description", "user_tags", "machine_tags", "longitude", "latitude", "accuracy",
          "page_url", "download_url", "license_name", "license_url", "server", "farm", "secret",
          "original_secret", "extension", "marker")
LAYOUTS = {len(FIELDS): FIELDS, len(FIELDS) - 2: FIELDS[1:2] + FIELDS[3:]}  # 25 and 23 fields
VIDEO_MARKER = "1"

MALFORMED = "malformed"  # a line with neither 25 nor 23 fields
VIDEO = "video"
NO_HASH = "no_hash"      # --images-root needs the photo hash: 23-field lines have none
UNDECODABLE_TAG = "undecodable_tag"    # a tag (not a row) dropped
UNDECODABLE_TEXT = "undecodable_text"  # a title or description (not a row) dropped


def field_index(name: str, n_fields: int) -> int | None:
    """The 0-based position of field `name` in a line of `n_fields` fields (None: not in that
    layout, or no such layout)."""
    layout = LAYOUTS.get(n_fields)
    return layout.index(name) if layout and name in layout else None


def field_sql(name: str, arr: str = "_f") -> str:
    """The field `name` of a line split into the array `arr` (null for a line of another layout)."""
    cases = " ".join(f"WHEN {n} THEN {arr}[{field_index(name, n)}]" for n in sorted(LAYOUTS)
                     if field_index(name, n) is not None)
    if not cases:
        raise ValueError(f"unknown YFCC100M field {name!r}; fields: {', '.join(FIELDS)}")
    return f"(CASE size({arr}) {cases} END)"


def tokens_sql(expr: str) -> str:
    """The comma-separated, still encoded, non-empty tokens of a tags field."""
    return f"filter(split(coalesce({expr}, ''), ',', -1), t -> t != '')"


def decoded_tags_sql(tokens: str) -> str:
    """Decoded tags of a tokens array, the undecodable and blank ones left out."""
    return f"filter(transform({tokens}, t -> trim(try_url_decode(t))), t -> t is not null and t != '')"


def undecodable_sql(tokens: str) -> str:
    """How many tokens of a tokens array do not decode."""
    return f"size(filter({tokens}, t -> try_url_decode(t) is null))"


def decoded_text_sql(expr: str) -> str:
    """A URL-encoded field decoded and trimmed; null when empty or undecodable."""
    return f"nullif(trim(try_url_decode(coalesce({expr}, ''))), '')"


def undecodable_text_sql(expr: str) -> str:
    """1 when a non-empty URL-encoded field does not decode, else 0."""
    return f"(CASE WHEN coalesce({expr}, '') != '' AND try_url_decode({expr}) IS NULL THEN 1 ELSE 0 END)"


def text_sql(title: str, description: str) -> str:
    """`title + "\\n" + description`, or whichever is non-null; null when both are."""
    return f"nullif(concat_ws(char(10), {title}, {description}), '')"


def mmc_path(root: str, photo_hash: str) -> str:
    """The image of `photo_hash` in the multimedia-commons layout ROOT/<h[0:3]>/<h[3:6]>/<h>.jpg."""
    h = photo_hash
    return f"{root.rstrip('/')}/{h[0:3]}/{h[3:6]}/{h}.jpg"


def mmc_path_sql(root: str, photo_hash: str) -> str:
    """mmc_path in Spark SQL (null when the hash is null or empty)."""
    h = photo_hash
    return (f"(CASE WHEN coalesce({h}, '') != '' THEN concat({sql_str(root.rstrip('/') + '/')}, "
            f"substr({h}, 1, 3), '/', substr({h}, 4, 3), '/', {h}, '.jpg') END)")


def double_sql(expr: str) -> str:
    """A numeric field as a double (null when empty or not a number)."""
    return f"try_cast(nullif(trim({expr}), '') AS double)"


_AUTOTAG = "'^(.*):([^:]*)$'"


def autotags_sql(expr: str, min_score: float) -> str:
    """The tags of an autotags `tag:score,...` field whose score is at least `min_score` (entries
    without a numeric score left out)."""
    pairs = (f"transform(split(coalesce({expr}, ''), ',', -1), x -> named_struct('tag', "
             f"trim(regexp_extract(x, {_AUTOTAG}, 1)), 'score', try_cast(regexp_extract(x, {_AUTOTAG}, 2) AS double)))")
    return f"transform(filter({pairs}, p -> p.tag != '' AND p.score >= {float(min_score)!r}), p -> p.tag)"
