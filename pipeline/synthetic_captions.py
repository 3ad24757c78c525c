"""Synthetic image captions for the caption matcher's benchmark (bench/caption_match_bench.py).

A caption is a few noise words and WordNet noun mentions: as many mentions as
pipeline/synthetic.py's tags-per-image law says, each an entry of pipeline/caption_match.py
(a lemma of SWAG's lexnames, multi-word ones included: "ice cream") drawn i.i.d. with
p(rank r) ~ r^-zipf over a seeded, polysemy-weighted order of the entries, each after 0-3 noise words (function
words, adjectives and verbs that are no entry); a fifth of the mentions end in a comma; the
first letter is capitalised ("A photo of the ice cream, with dog"). The same draws also give
the caption with every mention written as a hashtag ("A photo of the #ice_cream, with #dog"),
so the vocabulary job can be timed on both routes over the same content. Vectorised: Arrow
kernels join a batch's tokens; the same (n, seed, zipf) give the same captions.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.synthetic import tags_per_image_pmf, weighted_order, zipf_cdf

NOISE_WORDS: tuple[str, ...] = (
    "a", "the", "of", "with", "and", "in", "on", "at", "my", "our", "this", "that", "is", "are", "very",
    "beautiful", "lovely", "little", "big", "old", "new", "happy", "sunny", "bright", "dark", "tiny",
    "great", "nice", "amazing", "near", "under", "over", "from", "for", "some", "two", "three", "today",
    "yesterday", "looking", "sitting", "standing", "running", "walking", "made", "seen", "taken", "just",
    "really", "so", "here", "there", "by", "an", "its", "their", "another", "best", "favourite",
)
MAX_NOISE = 3      # noise words before a mention: 0..MAX_NOISE, uniform
COMMA_SHARE = 0.2  # mentions followed by a comma


def noise_words(entries: set[str]) -> list[str]:
    """NOISE_WORDS that are no entry (so noise adds no match of its own)."""
    return [w for w in NOISE_WORDS if w not in entries]


def ranked_entries(wn, entries: Sequence[str], seed: int) -> list[str]:
    """A seeded order of the entries, index i being Zipf rank i + 1, weighted by polysemy as
    pipeline/synthetic.py orders its lemmas (so `head` and `dog` tend to lead, `genus_colinus` to
    trail)."""
    polysemy = dict.fromkeys(entries, 0)
    for s in wn.all_synsets("n"):
        for lemma in s.lemma_names():
            if lemma.lower() in polysemy:
                polysemy[lemma.lower()] += 1
    return weighted_order(polysemy, np.random.default_rng(seed))


def caption_batches(n: int, ranked: Sequence[str], noise: Sequence[str], *, seed: int = 0, zipf_s: float = 1.1,
                    batch_size: int = 65_536) -> Iterator[tuple[pa.Array, pa.Array]]:
    """(captions, the same captions with hashtag mentions) in batches of up to batch_size rows."""
    rng = np.random.default_rng(seed)
    rank_cdf, count_cdf = zipf_cdf(len(ranked), zipf_s), np.cumsum(tags_per_image_pmf())
    count_cdf[-1] = 1.0
    words = [f.replace("_", " ") for f in ranked]
    tags = ["#" + f for f in ranked]
    # dictionary: noise words, mentions, mentions + ",": codes differ by an offset per kind
    as_text = pa.array([*noise, *words, *(w + "," for w in words)], pa.string())
    as_tags = pa.array([*noise, *tags, *(t + "," for t in tags)], pa.string())
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        mentions = 1 + np.searchsorted(count_cdf, rng.random(rows), side="right")  # per caption
        k = int(mentions.sum())
        ranks = np.searchsorted(rank_cdf, rng.random(k), side="right")
        comma = rng.random(k) < COMMA_SHARE
        before = rng.integers(0, MAX_NOISE + 1, k)  # noise words before each mention
        group_end = np.cumsum(before + 1)  # token offsets after each mention
        tokens = int(group_end[-1])
        codes = rng.integers(0, len(noise), tokens)
        codes[group_end - 1] = len(noise) + ranks + comma * len(ranked)
        offsets = np.zeros(rows + 1, dtype=np.int32)
        offsets[1:] = group_end[np.cumsum(mentions) - 1]
        lists = [pa.ListArray.from_arrays(pa.array(offsets), d.take(pa.array(codes))) for d in (as_text, as_tags)]
        yield tuple(pc.utf8_capitalize(pc.binary_join(t, " ")) for t in lists)
