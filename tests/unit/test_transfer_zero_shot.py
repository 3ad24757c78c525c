"""Zero-shot mapping on real WordNet 3.0, and the two aggregation rules by hand."""
import numpy as np
import pytest

from pipeline.wordnet import get_synsets
from pipeline.zero_shot_map import (ClassMapping, _hypernym_depths, aggregate, class_synsets, map_classes,
                                    mapping_table, path_similarity, read_overrides)
from tests.helpers import ROOT

HASHTAGS = ["crane", "brownbear", "bear", "dog", "truck"]


@pytest.fixture(scope="module")
def tags(wn):
    return [list(get_synsets(h, wn)) for h in HASHTAGS]


def test_brown_bear_maps_to_the_hashtag_holding_its_synset(wn, tags):
    assert "brown_bear.n.01" in tags[1] and "brown_bear.n.01" not in tags[2]
    [m] = map_classes(["brown_bear"], class_synsets(["brown_bear.n.01"], wn), tags, wn)
    assert m.hashtags == (1,) and m.similarity == 1.0 and m.source == "synset name"


def test_crane_hashtag_serves_both_crane_classes(wn, tags):
    # WordNet 3.0: crane.n.04 is the lifting machine (noun.artifact), crane.n.05 the bird (noun.animal)
    assert wn.synset("crane.n.04").lexname() == "noun.artifact" and wn.synset("crane.n.05").lexname() == "noun.animal"
    assert {"crane.n.04", "crane.n.05"} <= set(tags[0])
    names = ["crane_machine", "crane_bird", "dog"]
    syn = class_synsets(names, wn, {"crane_machine": ["crane.n.04"], "crane_bird": ["crane.n.05"]})
    maps = map_classes(names, syn, tags, wn)
    assert [m.hashtags for m in maps] == [(0,), (0,), (3,)]
    assert [m.source for m in maps] == ["override", "override", "morphy"]


def test_nearest_hashtag_when_no_exact_match(wn, tags):
    # no hashtag is a wolf; the nearest by path similarity is dog (wolf and dog are both canines)
    [m] = map_classes(["wolf"], class_synsets(["wolf"], wn), tags, wn)
    assert m.hashtags == (3,)
    assert m.similarity == pytest.approx(wn.synset("wolf.n.01").path_similarity(wn.synset("dog.n.01")))


def test_path_similarity_equals_nltk(wn):
    depths = lambda s: _hypernym_depths(s, wn)  # noqa: E731
    for a, b in [("crane.n.04", "crane.n.05"), ("dog.n.01", "cat.n.01"), ("brown_bear.n.01", "bear.n.01"),
                 ("computer.n.01", "food.n.02"), ("grus.n.01", "crane.n.05"), ("figure.n.06", "star.n.01")]:
        assert path_similarity(a, b, depths) == pytest.approx(wn.synset(a).path_similarity(wn.synset(b)))


def test_class_synset_sources_and_errors(wn):
    got = class_synsets(["n02084071", "dogs", "crane"], wn, {"crane": "crane.n.05"})
    assert got == [(("dog.n.01",), "wnid"), (("dog.n.01",), "morphy"), (("crane.n.05",), "override")]
    with pytest.raises(ValueError, match="signs_and_symbols.*override file"):
        class_synsets(["signs_and_symbols", "dog"], wn)
    with pytest.raises(ValueError, match="nosuch.n.01"):
        class_synsets(["dog"], wn, {"dog": ["nosuch.n.01"]})


def test_shipped_openclipart_overrides_resolve(wn):
    ov = read_overrides(ROOT / "pipeline" / "data" / "openclipart_class_synsets.yaml")
    assert {"computer", "shapes", "signs_and_symbols", "recreation", "special", "animals"} <= set(ov)
    resolved = class_synsets(sorted(ov), wn, ov)
    assert all(src == "override" and syns for syns, src in resolved)


def test_timm_imagenet_wnids_resolve(wn):
    from transfer.zero_shot import wnid_list

    ids = wnid_list("imagenet")
    assert len(ids) == 1000 and ids[0] == "n01440764"
    syn = class_synsets(ids[:3], wn)
    assert syn[0] == (("tench.n.01",), "wnid")


def test_aggregation_rules_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    mapping = [ClassMapping("x", ("a.n.01",), "override", (0, 1), 1.0),
               ClassMapping("y", ("b.n.01",), "override", (1, 2), 1.0),
               ClassMapping("z", ("c.n.01",), "override", (), 0.0)]
    np.testing.assert_allclose(aggregate(probs, mapping, "average"), [[0.4, 0.25, 0], [0.1, 0.45, 0]])
    # hashtag 1 serves two classes: its probability is split in half before the max
    np.testing.assert_allclose(aggregate(probs, mapping, "split_max"), [[0.5, 0.2, 0], [0.1, 0.8, 0]])
    with pytest.raises(ValueError, match="average, split_max"):
        aggregate(probs, mapping, "sum")
    table = mapping_table(mapping, ["t0", "t1", "t2"], [["a.n.01"], ["b.n.01"], ["c.n.01"]])
    assert table.splitlines()[1].split("\t") == ["x", "a.n.01", "override", "1.0000", "t0,t1", "a.n.01;b.n.01"]
