"""Hashtag normalization (SWAG appendix A) and hashtag extraction from captions."""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SEPARATORS = re.compile(r"[\s\-]+")
_OUTSIDE_ALPHABET = re.compile(r"[^a-z0-9_]")
# A caption's hashtag is '#' followed by a maximal run of word characters: letters, combining
# marks (so NFC and NFD spellings of a word give the same tag), numbers, connector punctuation
# ('_') and the zero-width non-joiner/joiner (U+200C/U+200D, inside words of Indic and Arabic
# scripts and emoji sequences). One implementation, Arrow's RE2 kernels, serves the Spark jobs
# (jobs/lib/manifest.py, a vectorised UDF) and Python callers alike: there is no second regex.
HASHTAG_CHARS = r"\p{L}\p{M}\p{N}\p{Pc}\x{200C}\x{200D}"
_LEADING_WORD = rf"^(?P<tag>[{HASHTAG_CHARS}]+)"
TAG_SEPARATOR = "#"  # never inside a tag: caption_hashtags_joined's separator


def normalize(tag: str) -> str:
    """NFKC, lowercase, strip leading '#', whitespace/'-' runs -> '_', keep [a-z0-9_], trim '_'.

    Returns '' when nothing is left; callers drop those.
    """
    t = unicodedata.normalize("NFKC", tag).lower().lstrip("#")
    t = _SEPARATORS.sub("_", t)
    t = _OUTSIDE_ALPHABET.sub("", t)
    return t.strip("_")


def caption_hashtags_array(captions) -> pa.ListArray:
    """Each caption's raw hashtags (`#words` without the '#'), in order; a null caption has none.

    Vectorised (pyarrow kernels, no Python per caption): a caption is split at every '#' and
    each piece after a '#' contributes its leading run of word characters, if any. This equals
    scanning for `#` + word characters left to right, because '#' is not a word character.
    """
    if isinstance(captions, pa.ChunkedArray):
        captions = captions.combine_chunks()
    elif not isinstance(captions, pa.Array):
        captions = pa.array(captions, pa.string())
    n = len(captions)
    pieces = pc.split_pattern(pc.fill_null(captions, ""), TAG_SEPARATOR)
    lengths = pc.list_value_length(pieces).to_numpy(zero_copy_only=False)  # >= 1 per caption
    flat = pc.list_flatten(pieces)
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    after_hash = np.ones(len(flat), dtype=bool)
    after_hash[np.cumsum(lengths) - lengths] = False  # a caption's first piece: before its first '#'
    words = pc.extract_regex(flat, _LEADING_WORD)
    keep = after_hash & pc.is_valid(words).to_numpy(zero_copy_only=False)
    tags = words.field("tag").filter(pa.array(keep))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows[keep], minlength=n), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), tags)


def caption_hashtags_joined(captions) -> pa.Array:
    """caption_hashtags_array's lists joined with TAG_SEPARATOR ('' where a caption has none):
    the form the Spark jobs receive, since a string result crosses back to the JVM without
    per-row Python."""
    return pc.binary_join(caption_hashtags_array(captions), TAG_SEPARATOR)


def caption_hashtags(caption: str | None) -> list[str]:
    """The raw `#words` of one caption, in order, without the '#' (caption_hashtags_array's rule)."""
    return caption_hashtags_array(pa.array([caption], pa.string()))[0].as_py()
