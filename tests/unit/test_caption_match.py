"""pipeline/caption_match.py on real WordNet 3.0: hand-written captions with their entries worked
out by hand, and a property test against a slow plain-Python scan of the same rule."""
import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.caption_match import lemma_entries, matcher_for, surface_forms
from pipeline.normalize import normalize
from pipeline.wordnet import DEFAULT_LEXNAMES, get_synsets


@pytest.fixture(scope="module")
def matcher():
    return matcher_for(None, DEFAULT_LEXNAMES)


@pytest.fixture(scope="module")
def forms(wn):
    return surface_forms(wn, lemma_entries(wn, DEFAULT_LEXNAMES))


def entries_of(matcher, *captions):
    return matcher.match(list(captions)).to_pylist()


@pytest.mark.parametrize("caption, expected", [
    ("A dog and an ice cream", ["dog", "ice_cream"]),          # and/an: no noun lemma of the six files
    ("ICE CREAM, Dog!", ["dog", "ice_cream"]),                   # case
    ("ice-cream and ice_cream", ["ice_cream"]),                  # '-' and '_' join words; distinct per caption
    ("ice, cream cheese", ["cream_cheese", "ice"]),              # a comma ends a compound
    ("ice cream cone", ["cone", "ice_cream"]),                   # ice_cream_cone is no lemma
    ("hot dog food", ["food", "hot_dog"]),                       # hot_dog and dog_food overlap: leftmost wins
    ("teddy bear cub", ["cub", "teddy_bear"]),                   # teddy_bear and bear_cub: leftmost wins
    ("brown bear brown", ["brown", "brown_bear"]),               # longest at the same start
    ("fish and chips", ["fish_and_chips"]),                      # longest beats fish, chips
    ("underdog dogma", []),                                      # dog inside a word never matches
    ("hotdog", ["hotdog"]),                                      # a lemma of its own, not dog
    ("dog's bone...dog", ["dog"]),                               # "'" separates: dog + s
    ("Two DOGS, three mice; geese", ["dog", "goose", "mouse", "three", "two"]),  # plurals -> lemma
    ("boxes of berries", ["berry", "box"]),
    ("two ice creams", ["ice_cream", "two"]),                    # a compound's plural
    ("glasses", ["glasses"]),                                    # a lemma itself, not glass's plural
    ("t-shirt", ["shirt"]),                                      # t-shirt is no entry (see the docstring)
    ("", []),
    (None, []),
    ("!!! ... ---", []),
    ("café dog", ["dog"]),                                       # café is not cafe: accents are kept
    ("ＤＯＧ and ﬁsh", ["dog", "fish"]),                          # NFKC folds full-width letters, ligatures
    ("İce cream", ["ice_cream"]),                                # lowercase is Unicode's simple mapping
    ("dog\u0301 cat", ["cat"]),                                  # a combining mark belongs to its word
    ("東京 dog😀cat", ["cat", "dog"]),                            # emoji separate; CJK is a word of its own
])
def test_hand_written_captions(matcher, caption, expected):
    assert entries_of(matcher, caption) == [expected]


def test_batch_rows_stay_apart(matcher):
    """Matches map back to their own caption; no multi-word entry spans two captions; an
    ASCII-only batch and a mixed one give the same entries."""
    captions = ["ice", "cream", None, "dog", "", "hot", "dog food", "café"]
    expected = [["ice"], ["cream"], [], ["dog"], [], [], ["dog_food"], []]
    assert entries_of(matcher, *captions) == expected
    assert entries_of(matcher, *captions[:-1]) == expected[:-1]
    chunked = pa.chunked_array([pa.array(captions[:3]), pa.array(captions[3:])])
    assert matcher.match(chunked).to_pylist() == expected
    assert matcher.match(pa.array(captions).slice(3, 4)).to_pylist() == expected[3:7]


def test_every_entry_survives_listing_1(wn, matcher):
    """An emitted entry is its own normalized hashtag and names a synset through get_synsets
    (every 25th entry: get_synsets is slow)."""
    entries = matcher.entries.to_pylist()
    assert len(entries) > 50_000 and entries == sorted(set(entries))
    assert all(normalize(e) == e for e in entries)
    assert all(get_synsets(e, wn, DEFAULT_LEXNAMES) for e in entries[::25])


# --- the property test: a slow, plain-Python scan of the same rule -------------------------------
JOINERS = set("\t\n\v\f\r -_")


def is_word_char(c: str) -> bool:
    return unicodedata.category(c)[0] in "LMN" or c in "\u200c\u200d"


def reference(caption: str | None, forms: dict[str, str], max_words: int) -> list[str]:
    """Words and the runs between them, character by character; then at each word the longest
    form over the next words joined only by whitespace/'-'/'_' runs, else the next word."""
    text = unicodedata.normalize("NFKC", caption or "").lower()
    words, joined = [], []  # joined[i]: words i and i+1 are separated by joiners only
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and is_word_char(text[j]) == is_word_char(text[i]):
            j += 1
        if is_word_char(text[i]):
            words.append(text[i:j])
            joined.append(False)
        elif words and set(text[i:j]) <= JOINERS:
            joined[-1] = True
        i = j
    found, k = set(), 0
    while k < len(words):
        for n in range(min(max_words, len(words) - k), 0, -1):
            if all(joined[k:k + n - 1]) and "_".join(words[k:k + n]) in forms:
                found.add(forms["_".join(words[k:k + n])])
                k += n
                break
        else:
            k += 1
    return sorted(found)


def pieces(forms: dict[str, str]) -> list[str]:
    """Caption pieces that make overlaps likely: multi-word forms, each of their words, plurals,
    noise words, and non-ASCII and look-alike strings."""
    multi = sorted(f for f in forms if "_" in f)[::40]
    words = sorted({w for f in multi for w in f.split("_")})
    plurals = sorted(f for f, e in forms.items() if f != e)[::200]
    noise = ["the", "a", "of", "with", "photo", "my", "2019", "dogma", "underdog", "xx", "hotdog"]
    odd = ["café", "ＤＯＧ", "ﬁsh", "dog\u0301", "東京", "😀", "naïve", "straße", "Ⅻ", "٣", "ice\u200dcream"]
    return [f.replace("_", " ") for f in multi] + words + plurals + noise + odd


SEPARATORS = [" ", " ", " ", "-", "_", ", ", ". ", "'", "  ", "\n", "/", " - ", "!", "\t", "\u00a0", "—"]


@st.composite
def captions(draw, pool):
    parts = draw(st.lists(st.tuples(st.sampled_from(pool), st.sampled_from(SEPARATORS),
                                    st.sampled_from(["lower", "upper", "title"])), max_size=12))
    return "".join(getattr(p, case)() + sep for p, sep, case in parts)


def test_matches_the_plain_python_scan(matcher, forms):
    pool = pieces(forms)
    max_words = max(f.count("_") + 1 for f in forms)

    @given(st.lists(st.one_of(st.none(), captions(pool)), max_size=20))
    @settings(max_examples=400, deadline=None)
    def check(batch):
        assert matcher.match(batch).to_pylist() == [reference(c, forms, max_words) for c in batch]
    check()


def test_random_batch_matches_the_plain_python_scan(matcher, forms):
    """One 5,000-caption batch (seeded): row mapping and the leftmost-longest choice at scale."""
    rng = np.random.default_rng(7)
    pool = pieces(forms)
    seps = np.array(SEPARATORS, dtype=object)
    batch = ["".join(p + s for p, s in zip(rng.choice(pool, k), rng.choice(seps, k)))
             for k in rng.integers(0, 25, 5000)]
    max_words = max(f.count("_") + 1 for f in forms)
    assert matcher.match(batch).to_pylist() == [reference(c, forms, max_words) for c in batch]
