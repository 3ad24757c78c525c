import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.normalize import caption_hashtags, normalize


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
