"""Captions -> WordNet noun entries (MetaCLIP-style matching against SWAG's vocabulary).

An *entry* is a WordNet 3.0 noun lemma of a synset in the given lexnames, written as a hashtag
(`ice_cream`): lowercase, '_' between its words. It is what the vocabulary job receives as an
image's raw tag, so captions go through today's canonicalization (normalize, Listing 1's
get_synsets, min-count, identical-synset merging) and a caption's "ice cream" and a `#ice_cream`
are one label.

Which lemmas are entries: those whose hashtag form is `[a-z0-9_]` only and at least 3 characters
long. Exactly these survive `normalize` unchanged and are found again by `get_synsets` (morphy
finds the lemma itself; get_synsets answers nothing under 3 characters); a lemma such as
`t-shirt` or `jack-o'-lantern` would be emitted, normalized to a string WordNet does not know and
dropped as `no_synsets`, so it is left out here and its words match on their own (`shirt`).

Plurals: yes. A caption says "two dogs" far more often than "#dog", so an entry also matches its
plural forms: the regular English plurals of its last word (dogs, boxes, berries, ice creams)
and WordNet's irregular ones (noun.exc: mice, geese, children), each kept only when WordNet's
morphy, the step Listing 1 applies to a hashtag, takes it back to that very lemma (so `glasses`,
itself a lemma, stays `glasses`, not a plural of `glass`). A plural emits its lemma: "dogs" and
"dog" are one raw tag whose images count together towards --min-count.

Matching: case-insensitive (after NFKC, as `normalize` does; lowercase is Unicode's simple
mapping, so "İce" is "ice"), whole words only, a word being a run of letters, marks and digits:
"hotdog", "underdog" and "café" hold no `dog` or `cafe`, "dog's" holds `dog`. Words that only
whitespace, '-' or '_' separate may form a multi-word entry ("ice cream", "Ice-Cream" ->
`ice_cream`); any other punctuation ends one ("ice, cream cheese" -> `ice`, `cream_cheese`).
Where entries overlap, the longest at the leftmost start wins and the scan goes on after it
("hot dog food" -> `hot_dog`, `food`). Each caption gets its distinct entries, sorted.

How, with no Python per caption: pyarrow kernels turn a batch into one ASCII string (one space
between joined words, two where punctuation separates them, a space around each caption, so two
between captions; a run of non-ASCII word characters becomes '~', which no entry holds); every
entry form is a pattern " w1 w2 " of a pyahocorasick automaton, so a match begins and ends at
word boundaries.
`Automaton.iter` (every occurrence; `iter_long` misses matches reached through failure links,
pyahocorasick issues 133, 185, 189) runs once over the string, and numpy keeps the
leftmost-longest ones (`_leftmost_longest`) and maps them back to captions (searchsorted over the
captions' end offsets).
"""
from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.wordnet import load_wordnet

WORD_CHARS = r"\p{L}\p{M}\p{N}\x{200C}\x{200D}"  # letters, marks, digits, ZWNJ/ZWJ (inside words)
NON_ASCII_WORD = "~"  # what a run of non-ASCII word characters becomes: in no entry
_ENTRY = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*")
_VOWELS = set("aeiou")


def lemma_entries(wn, lexnames: Sequence[str]) -> list[str]:
    """Sorted hashtag forms of the noun lemmas of synsets in `lexnames` that are entries (see the
    module docstring: `[a-z0-9_]`, 3 characters or more)."""
    keep = set(lexnames)
    out = set()
    for s in wn.all_synsets("n"):
        if s.lexname() in keep:
            for lemma in s.lemma_names():
                h = lemma.lower()
                if len(h) >= 3 and _ENTRY.fullmatch(h):
                    out.add(h)
    return sorted(out)


def regular_plurals(entry: str) -> list[str]:
    """English plural candidates of an entry's last word (morphy's noun rules, inverted)."""
    if entry.endswith(("s", "x", "z", "ch", "sh")):
        return [entry + "es"]
    if entry.endswith("y") and entry[-2] not in _VOWELS:
        return [entry[:-1] + "ies"]
    if entry.endswith("man"):
        return [entry[:-3] + "men", entry + "s"]
    return [entry + "s"]


def surface_forms(wn, entries: Sequence[str]) -> dict[str, str]:
    """Every form a caption may hold of an entry (hashtag form) -> that entry: the entry itself,
    and each regular or noun.exc plural that is no entry itself -> the entry morphy maps it to
    (Listing 1's reading of it as a hashtag), if any."""
    known = set(entries)
    forms = {e: e for e in entries}
    irregular = [f for f in wn._exception_map["n"] if _ENTRY.fullmatch(f)]
    for form in itertools.chain((p for e in entries for p in regular_plurals(e)), irregular):
        if form not in forms:
            base = wn.morphy(form, "n")
            if base in known:
                forms[form] = base
    return forms


def pattern(form: str) -> str:
    """The automaton's pattern of an entry form: its words between single spaces, as scan_text
    writes words that only whitespace, '-' or '_' separate."""
    return " " + form.replace("_", " ") + " "


def scan_text(captions: pa.Array) -> pa.Array:
    """Each caption as the automaton reads it (ASCII): NFKC and lowercase; a run of non-word
    characters -> one space if it is only whitespace, '-' and '_' (words a multi-word entry may
    span), else two (a comma or a full stop ends a compound: "ice, cream" is not `ice_cream`);
    a run of non-ASCII word characters -> NON_ASCII_WORD; then " " + that + " ", so two spaces
    part captions as well. A null caption reads as an empty one."""
    s = pc.fill_null(captions, "")
    ascii_only = pc.all(pc.string_is_ascii(s)).as_py() is not False
    if not ascii_only:
        s = pc.utf8_normalize(s, "NFKC")
    s = pc.ascii_lower(s) if ascii_only else pc.utf8_lower(s)
    s = pc.replace_substring_regex(s, r"[\t\n\v\f\r \-_]+", " ")
    s = pc.replace_substring_regex(s, f"[^{WORD_CHARS}]*[^{WORD_CHARS} ][^{WORD_CHARS}]*", "  ")
    if not ascii_only:
        s = pc.replace_substring_regex(s, r"[^\x00-\x7f]+", NON_ASCII_WORD)
    return pc.binary_join_element_wise(" ", s, " ", "")


def _leftmost_longest(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Indices of the matches a left-to-right scan keeps: the longest match at the leftmost start,
    then the same from its end on. `starts`/`ends` (end exclusive) are sorted by start, then by
    length descending.

    The scan's picks are the path from each "head" (a match that no earlier match overlaps, so
    kept whatever came before) along next(i) = the first match starting at or after ends[i].
    Heads and next() are vectorised; the paths are followed by pointer doubling, one numpy round
    per doubling: one or two rounds on real captions, log2 of the longest chain of overlapping
    matches at worst."""
    n = len(starts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = starts[1:] != starts[:-1]  # the longest match of each start
    starts, ends, idx = starts[first], ends[first], np.flatnonzero(first)
    reach = np.maximum.accumulate(ends)
    heads = np.ones(len(starts), dtype=bool)
    heads[1:] = starts[1:] >= reach[:-1]
    jump = np.append(np.searchsorted(starts, ends, side="left"), len(starts))  # next(); the last is a sink
    on = np.append(heads, False)
    while True:
        grown = on.copy()
        grown[jump[np.flatnonzero(on)]] = True
        grown[-1] = False
        if np.array_equal(grown, on):
            return idx[np.flatnonzero(on[:-1])]
        on, jump = grown, jump[jump]


@dataclass(frozen=True, eq=False)
class CaptionMatcher:
    """The compiled matcher: `match(captions)` -> each caption's distinct entries, sorted."""
    entries: pa.Array              # entry strings, sorted: entry id = index
    automaton: ahocorasick.Automaton
    pattern_entry: np.ndarray      # pattern id -> entry id
    pattern_length: np.ndarray     # pattern id -> characters, the two padding spaces included

    def match(self, captions) -> pa.ListArray:
        """A list<string> per caption (null or empty -> empty list); `captions` is a pyarrow
        string array or chunked array, or a sequence of str/None."""
        if isinstance(captions, pa.ChunkedArray):
            captions = captions.combine_chunks()
        elif not isinstance(captions, pa.Array):
            captions = pa.array(captions, pa.string())
        text = scan_text(captions)
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + len(text) + 1]
        raw = str(memoryview(text.buffers()[2])[offsets[0]:offsets[-1]], "ascii")
        found = np.fromiter(itertools.chain.from_iterable(self.automaton.iter(raw)), dtype=np.int64)
        pids, lengths = found[1::2], self.pattern_length[found[1::2]]
        # a match's span without its padding spaces, which neighbouring words' matches share
        ends = found[0::2]
        starts = ends + 2 - lengths
        # matches come by end, so start order is nearly sorted: a stable sort (timsort) is ~linear
        order = np.argsort(starts * (int(lengths.max(initial=0)) + 1) - lengths, kind="stable")
        kept = order[_leftmost_longest(starts[order], ends[order])]
        rows = np.searchsorted(offsets[1:] - offsets[0], starts[kept], side="right")
        key = np.sort(rows * len(self.entries) + self.pattern_entry[pids[kept]], kind="stable")
        key = key[np.append(True, key[1:] != key[:-1])] if len(key) else key  # distinct per caption
        rows, entry_ids = np.divmod(key, len(self.entries))
        list_offsets = np.zeros(len(captions) + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=len(captions)), out=list_offsets[1:])
        return pa.ListArray.from_arrays(pa.array(list_offsets), self.entries.take(pa.array(entry_ids)))


def build_matcher(wn, lexnames: Sequence[str]) -> CaptionMatcher:
    """The matcher of the entries of `lexnames` in WordNet `wn` (a few seconds: one pass over the
    noun synsets, one morphy per plural candidate)."""
    entries = lemma_entries(wn, lexnames)
    entry_id = {e: i for i, e in enumerate(entries)}
    forms = surface_forms(wn, entries)
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    pattern_entry, pattern_length = [], []
    for pid, (form, entry) in enumerate(sorted(forms.items())):
        p = pattern(form)
        automaton.add_word(p, pid)
        pattern_entry.append(entry_id[entry])
        pattern_length.append(len(p))
    automaton.make_automaton()
    return CaptionMatcher(pa.array(entries, pa.string()), automaton,
                          np.array(pattern_entry, dtype=np.int64), np.array(pattern_length, dtype=np.int64))


@functools.lru_cache(maxsize=4)
def matcher_for(wordnet_dir: str | None, lexnames: tuple[str, ...]) -> CaptionMatcher:
    """build_matcher over the WordNet in `wordnet_dir` (None: the default), once per process."""
    return build_matcher(load_wordnet(wordnet_dir), lexnames)
