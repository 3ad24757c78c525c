"""get_synsets on real WordNet 3.0: the cases the SWAG / WSL papers name."""
import pytest

from pipeline.normalize import normalize
from pipeline.wordnet import DEFAULT_LEXNAMES, get_synsets, resolve_synsets, synset_key


def test_eggplant_and_aubergine_are_one_label(wn):
    assert get_synsets("eggplant", wn) == get_synsets("aubergine", wn) != ()
    assert "eggplant.n.01" in get_synsets("eggplant", wn)


def test_brownbear_and_ursusarctos_are_brown_bear(wn):
    assert get_synsets("brownbear", wn) == ("brown_bear.n.01",)
    assert get_synsets("ursusarctos", wn) == ("brown_bear.n.01",)


def test_newyork_is_dropped(wn):
    # New York's synsets are noun.location: outside the kept lexicographer files.
    assert get_synsets("newyork", wn) == ()
    assert any(s.lexname() == "noun.location" for s in wn.synsets("new_york"))


def test_icecream_and_ice_cream_are_one_label(wn):
    a = get_synsets(normalize("icecream"), wn)
    b = get_synsets(normalize("ice cream"), wn)
    assert a == b and "ice_cream.n.01" in a


def test_short_hashtags_and_lexname_filter(wn):
    assert get_synsets("ox", wn) == ()  # shorter than 3
    assert get_synsets("love", wn) == ()  # noun.feeling etc., no kept lexname
    # every synset returned belongs to a kept lexname
    for h in ("dog", "apple", "car", "wedding", "rock", "rose"):
        syn = get_synsets(h, wn)
        assert syn, h
        assert all(wn.synset(s).lexname() in DEFAULT_LEXNAMES for s in syn)
    # a configured lexname set changes the answer
    assert get_synsets("love", wn, ("noun.feeling",)) != ()


def test_synset_key_sorted():
    assert synset_key(["b.n.01", "a.n.02"]) == "a.n.02+b.n.01"


def test_resolve_synsets_names_and_offsets(wn):
    dog = wn.synset("dog.n.01")
    got = resolve_synsets([f"n{dog.offset():08d}", "brown_bear.n.01", "# comment", ""], wn)
    assert got == {"dog.n.01", "brown_bear.n.01"}
    with pytest.raises(ValueError, match="nosuch.n.01"):
        resolve_synsets(["nosuch.n.01"], wn)
