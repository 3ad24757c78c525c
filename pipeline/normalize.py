"""Hashtag normalization (SWAG appendix A) and hashtag extraction from captions."""
from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\s\-]+")
_OUTSIDE_ALPHABET = re.compile(r"[^a-z0-9_]")
# A caption's hashtags are `#` followed by letters, digits or `_` (Unicode-aware). The Java
# pattern is the same rule for Spark's regexp_extract_all, so the per-row work stays in the JVM.
CAPTION_HASHTAG = re.compile(r"#(\w+)")
CAPTION_HASHTAG_JAVA = r"(?U)#(\w+)"


def normalize(tag: str) -> str:
    """NFKC, lowercase, strip leading '#', whitespace/'-' runs -> '_', keep [a-z0-9_], trim '_'.

    Returns '' when nothing is left; callers drop those.
    """
    t = unicodedata.normalize("NFKC", tag).lower().lstrip("#")
    t = _SEPARATORS.sub("_", t)
    t = _OUTSIDE_ALPHABET.sub("", t)
    return t.strip("_")


def caption_hashtags(caption: str | None) -> list[str]:
    """The raw `#words` of a caption, in order, without the '#'."""
    if not caption:
        return []
    return CAPTION_HASHTAG.findall(caption)
