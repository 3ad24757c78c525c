"""Tags from captions: where an image's raw tags come from (`TagSource`: the vocab job's
--tags-from / --caption-column, which the label job reads back from the vocabulary, so the two
cannot disagree), the vectorised UDF matching captions against WordNet's noun entries
(pipeline/caption_match.py) and the per-caption counts the vocab job reports.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd  # the UDF's type hints (pandas_udf resolves them in this module)
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.lib.output import read_text
from pipeline.normalize import TAG_SEPARATOR
from pipeline.wordnet import DEFAULT_LEXNAMES
from schemas import MANIFEST_CAPTION

TAG_SOURCES = ("hashtags", "caption")
HISTOGRAM_MAX = 10  # entries per caption are counted 0, 1, ..., 9 and "10+"
TOP_ENTRIES = 20


@dataclass(frozen=True)
class TagSource:
    """hashtags: the `hashtags` column plus a caption's `#words`; caption: the WordNet entries
    matched in `caption_column` (entries of `lexnames` in the WordNet at `wordnet`, None: the
    default)."""
    tags_from: str = "hashtags"
    caption_column: str = MANIFEST_CAPTION
    lexnames: tuple[str, ...] = DEFAULT_LEXNAMES
    wordnet: str | None = None

    def __post_init__(self):
        if self.tags_from not in TAG_SOURCES:
            raise ValueError(f"--tags-from {self.tags_from!r}: valid are {', '.join(TAG_SOURCES)}")
        if not self.caption_column:
            raise ValueError("--caption-column is empty")

    @property
    def captions(self) -> bool:
        return self.tags_from == "caption"

    @classmethod
    def from_config(cls, config: Mapping) -> TagSource:
        """From the vocab job's config: its VocabConfig's fields, or the `config` block of its
        stats.json (one reading of those keys for both). A vocabulary written before
        --tags-from existed was built from hashtags."""
        return cls(config.get("tags_from", "hashtags"), config.get("caption_column", MANIFEST_CAPTION),
                   tuple(config.get("lexnames", DEFAULT_LEXNAMES)), config.get("wordnet"))


def vocabulary_tag_source(spark, vocab_dir: str) -> TagSource:
    """The TagSource the vocabulary in `vocab_dir` was built with (its stats.json)."""
    path = f"{vocab_dir}/stats.json"
    try:
        config = json.loads(read_text(spark, path))["config"]
    except Exception as e:  # absent, unreadable or not the vocab job's
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot read the vocabulary's config ({first}): it says where the "
                         "vocabulary took its tags from (--tags-from), which labelling must repeat") from None
    return TagSource.from_config(config)


def caption_entries_udf(lexnames: tuple[str, ...]):
    """A vectorised UDF: caption -> its WordNet entries joined by TAG_SEPARATOR ('' for none).
    The matcher is built once per executor Python worker (pipeline.caption_match.matcher_for's
    cache), from the WordNet that jobs.lib.session.ship_wordnet shipped; only the caption column
    crosses to Python, an Arrow batch at a time, and one string per row comes back."""
    def fn(captions: pd.Series) -> pd.Series:
        from jobs.lib.session import executor_wordnet_dir
        from pipeline.caption_match import matcher_for

        matcher = matcher_for(str(executor_wordnet_dir()), lexnames)
        entries = matcher.match(pa.array(captions, pa.string(), from_pandas=True))
        return pd.Series(pd.arrays.ArrowExtensionArray(pc.binary_join(entries, TAG_SEPARATOR)), index=captions.index)
    return F.pandas_udf(fn, "string")


def caption_metrics(caption: Column, tags: Column) -> list[Column]:
    """Aggregates for an Observation over the manifest's rows: captions read (non-empty), those
    that matched no entry, and the histogram of entries per caption."""
    read = caption.isNotNull() & (F.length(caption) > 0)
    n = F.size(tags)
    bins = [F.sum((read & (n == k)).cast("long")).alias(f"entries_{k}") for k in range(HISTOGRAM_MAX)]
    return [F.sum(read.cast("long")).alias("captions_read"), *bins,
            F.sum((read & (n >= HISTOGRAM_MAX)).cast("long")).alias(f"entries_{HISTOGRAM_MAX}+")]


def caption_stats(observed: Mapping) -> dict:
    """caption_metrics' values as the stats.json block."""
    hist = {f"{k}": int(observed.get(f"entries_{k}") or 0) for k in range(HISTOGRAM_MAX)}
    hist[f"{HISTOGRAM_MAX}+"] = int(observed.get(f"entries_{HISTOGRAM_MAX}+") or 0)
    return {"captions_read": int(observed.get("captions_read") or 0), "captions_without_match": hist["0"],
            "entries_per_caption": hist}


def entry_stats(counts) -> dict:
    """Distinct entries among the kept images and the TOP_ENTRIES most frequent, from the
    (hashtag, images) counts (an entry is its own normalized hashtag)."""
    top = counts.orderBy(F.col("images").desc(), F.col("hashtag")).limit(TOP_ENTRIES).collect()
    return {"distinct_entries": counts.count(), "top_entries": [[r["hashtag"], int(r["images"])] for r in top]}
