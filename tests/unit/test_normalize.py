import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.normalize import caption_hashtags, normalize
from tests.helpers.jobkit import ACUTE, TRICKY_CAPTIONS, ZWJ, ZWNJ


def test_swag_rules():
    assert normalize("#BrownBear") == "brownbear"
    assert normalize("ice cream") == "ice_cream"
    assert normalize("Ice-Cream") == "ice_cream"
    assert normalize("  new   york ") == "new_york"
    assert normalize("a - b") == "a_b"  # one run of whitespace/'-' -> one '_'
    assert normalize("ＣＡＦＥ") == "cafe"  # NFKC folds full-width letters
    assert normalize("café") == "caf"  # outside [a-z0-9_] after NFKC: dropped
    assert normalize("__hello__") == "hello"
    assert normalize("#") == ""
    assert normalize("😀") == ""
    assert normalize("50mm") == "50mm"


@given(st.text())
@settings(max_examples=500)
def test_normalize_is_idempotent_and_in_alphabet(s):
    n = normalize(s)
    assert normalize(n) == n
    assert re.fullmatch(r"[a-z0-9_]*", n)
    assert not n.startswith("_") and not n.endswith("_")


def test_caption_hashtags():
    assert caption_hashtags("Sunset at the #beach with #Ice_Cream! #2024 # no") == ["beach", "Ice_Cream", "2024"]
    assert caption_hashtags(None) == []
    assert caption_hashtags("#café au lait") == ["café"]


def test_caption_hashtags_on_unicode_captions():
    for caption, tags in TRICKY_CAPTIONS.items():
        assert caption_hashtags(caption) == tags, caption


def test_caption_hashtags_nfc_and_nfd_captions_give_the_same_hashtags():
    """Combining marks are word characters, so a caption typed decomposed (NFD) or composed (NFC)
    gives the same normalized hashtags."""
    for caption in [*TRICKY_CAPTIONS, "#Crème_brûlée #Ñandú #한국어 #Ελληνικά #Åse"]:
        nfc, nfd = unicodedata.normalize("NFC", caption), unicodedata.normalize("NFD", caption)
        assert [normalize(t) for t in caption_hashtags(nfc)] == [normalize(t) for t in caption_hashtags(nfd)], caption


def word_char(c: str) -> bool:
    """The rule in plain Python: letters, marks, numbers, connector punctuation, ZWNJ/ZWJ."""
    return unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc" or c in (ZWNJ, ZWJ)


def reference_hashtags(caption: str) -> list[str]:
    out, i = [], 0
    while i < len(caption):
        if caption[i] == "#":
            j = i + 1
            while j < len(caption) and word_char(caption[j]):
                j += 1
            if j > i + 1:
                out.append(caption[i + 1:j])
            i = j
        else:
            i += 1
    return out


# characters of long-assigned Unicode (so Python's and RE2's tables agree on them)
ALPHABET = list("#ab_Z09 -.!'é²Ⅻ٣東한") + [ZWJ, ZWNJ, ACUTE, "\u093f", "\u094d", "\u0915", "\U0001F468", "\ufe0f",
                                        "\u00a0", "\u3000", "\u2028"]


@given(st.text(alphabet=st.sampled_from(ALPHABET), max_size=40))
@settings(max_examples=400)
def test_caption_hashtags_follow_the_rule(caption):
    assert caption_hashtags(caption) == reference_hashtags(caption)
    assert all(normalize(normalize(t)) == normalize(t) for t in caption_hashtags(caption))


def test_caption_hashtags_of_a_row_with_10000_tags():
    caption = " ".join(f"#Tag_{i}{ACUTE if i % 3 == 0 else ''}" for i in range(10_000))
    tags = caption_hashtags(caption)
    assert tags == [f"Tag_{i}{ACUTE if i % 3 == 0 else ''}" for i in range(10_000)]
    assert caption_hashtags(caption) == tags  # deterministic
