"""Reading image sets with group columns in their published layouts, group ids with counted
exclusions, and the WordNet label types (real WordNet)."""
import csv
import json

import pytest
from PIL import Image

from transfer.groups.data import group_index, group_values, read_images
from transfer.groups.label_types import TYPE_ROOTS, TYPES, label_types, read_type_overrides, type_table


def _png(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (40 * seed % 256, 90, 200)).save(path)


def test_utkface_file_names_give_age_gender_race_and_bad_names_are_counted(tmp_path):
    for name in ("25_0_2_20170116174525125.jpg", "71_1_0_20170120134639935.jpg", "3_1_4_20161219.jpg",
                 "39_1_20170116174525125.jpg",   # UTKFace's known malformed names: no race
                 "notes.txt"):
        _png(tmp_path / name) if name.endswith(".jpg") else (tmp_path / name).write_text("x")
    t = read_images(str(tmp_path), "utkface")
    assert [p.name[:2] for p in t.sources] == ["25", "3_", "71"]  # sorted by name
    assert t.column("age") == [25, 3, 71] and t.column("age_bucket") == ["18-29", "0-17", "70+"]
    assert t.column("gender") == ["0", "1", "1"] and t.column("race") == ["2", "4", "0"]
    assert t.skipped == {"name not [age]_[gender]_[race]_[date]": 2}
    assert group_values(t, "gender+race") == ["0/2", "1/4", "1/0"]
    with pytest.raises(ValueError, match="no column 'skin_tone'.*age, age_bucket, gender, race"):
        group_values(t, "skin_tone")


def test_dollar_street_layout(tmp_path):
    rows = [("a1", "Burundi", "af", '["dog", "truck"]', "h1", "27", "images/a1.png"),
            ("a2", "Burundi", "af", "['cat']", "h1", "27", "images/a2.png"),
            ("b1", "Sweden", "eu", '["cat"]', "h2", "3000", "images/b1.png"),
            ("gone", "Sweden", "eu", '["cat"]', "h2", "3000", "images/gone.png")]
    with open(tmp_path / "images_v2.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "country.name", "region.id", "topics", "place", "income", "imageRelPath"])
        w.writerows(rows)
    for r in rows[:3]:
        _png(tmp_path / r[6])
    t = read_images(str(tmp_path), "dollar_street")
    assert len(t) == 3 and t.skipped == {"image file missing": 1}
    assert t.column("country") == ["Burundi", "Burundi", "Sweden"] and t.column("region") == ["af", "af", "eu"]
    assert t.column("household") == ["h1", "h1", "h2"] and t.column("income_bucket") == ["low", "low", "high"]
    assert t.labels() == [["dog", "truck"], ["cat"], ["cat"]]
    (tmp_path / "bad.csv").write_text("id,country.name\nx,Y\n")
    with pytest.raises(ValueError, match="missing column"):
        read_images(str(tmp_path / "bad.csv"), "dollar_street")


def test_any_table_with_an_image_column(tmp_path):
    _png(tmp_path / "x" / "1.png")
    _png(tmp_path / "x" / "2.png", 1)
    (tmp_path / "t.csv").write_text("image,skin_tone,labels,income\nx/1.png,3,dog|cat,1000\nx/2.png,,,\n")
    t = read_images(str(tmp_path / "t.csv"), "table")
    assert t.column("skin_tone") == ["3", None] and t.labels() == [["dog", "cat"], []]
    assert t.column("income") == [1000.0, None] and t.column("income_bucket") == ["medium", None]  # ln 1000 / 3 = 2.3
    with pytest.raises(ValueError, match="unknown layout 'tsv'; valid: folder, utkface, dollar_street, "
                                         "casual_conversations, miap, table"):
        read_images(str(tmp_path / "t.csv"), "tsv")
    with pytest.raises(ValueError, match="no such file"):
        read_images(str(tmp_path / "nope.csv"), "table")


def test_casual_conversations_face_crops_with_skin_tone_and_age_buckets(tmp_path):
    items = [{"img_path": "crops/a.jpg", "age": "23", "gender": "Female", "skin-type": "2"},
             {"img_path": "crops/b.jpg", "age": "71", "gender": "Male", "skin-type": "5"},
             {"img_path": "crops/c.jpg", "age": "N/A", "gender": "Other", "skin-type": ""},
             {"img_path": "crops/gone.jpg", "age": "30", "gender": "Male", "skin-type": "6"}]
    for i in items[:3]:
        _png(tmp_path / i["img_path"])
    (tmp_path / "cc.json").write_text(json.dumps(items))
    t = read_images(str(tmp_path / "cc.json"), "casual_conversations")
    assert len(t) == 3 and t.skipped == {"image file missing": 1}
    assert t.column("gender") == ["female", "male", "other"] and t.column("age") == [23, 71, None]
    assert t.column("age_bucket") == ["18-29", "70+", None]
    assert t.column("skin_tone") == ["lighter", "darker", None]  # Fitzpatrick 1-3 / 4-6, as VISSL
    assert group_values(t, "gender+skin_tone") == ["female/lighter", "male/darker", None]
    with pytest.raises(ValueError, match="JSON metadata file"):
        read_images(str(tmp_path), "casual_conversations")


def test_miap_boxes_keep_images_with_one_person(tmp_path):
    header = "ImageID,LabelName,Confidence,XMin,XMax,YMin,YMax,GenderPresentation,AgePresentation\n"
    rows = ["one,/m/01g317,1,0.1,0.5,0.1,0.9,Predominantly Feminine,Young",
            "two,/m/01g317,1,0.1,0.3,0.1,0.9,Predominantly Masculine,Middle",
            "two,/m/01g317,1,0.5,0.9,0.1,0.9,Unknown,Older",
            "three,/m/01g317,1,0.1,0.5,0.1,0.9,Unknown,Older",
            "gone,/m/01g317,1,0.1,0.5,0.1,0.9,Predominantly Masculine,Young"]
    (tmp_path / "miap.csv").write_text(header + "\n".join(rows) + "\n")
    for name in ("one", "two", "three"):
        _png(tmp_path / f"{name}.jpg")
    t = read_images(str(tmp_path / "miap.csv"), "miap")
    assert [p.stem for p in t.sources] == ["one", "three"]
    assert t.column("gender") == ["female", "gender_unknown"] and t.column("age") == ["young", "older"]
    assert t.skipped == {"several person boxes": 1, "image file missing": 1}
    (tmp_path / "other.csv").write_text("ImageID,Label\nx,y\n")
    with pytest.raises(ValueError, match="GenderPresentation"):
        read_images(str(tmp_path / "other.csv"), "miap")


def test_group_ids_count_missing_values_and_small_groups():
    values = ["b", "a", None, "b", "c", "a", "b", None]
    g = group_index(values, min_size=2)
    assert g.names == ("a", "b") and g.sizes == (2, 3)
    assert g.ids.tolist() == [1, 0, -1, 1, -1, 0, 1, -1]
    assert g.excluded == {"missing value": 2, "small groups": {"c": 1}}
    # by households: "b" has 3 images but 1 household
    homes = ["h1", "h2", None, "h1", "h4", "h3", "h1", None]
    g = group_index(values, min_size=2, units=homes)
    assert g.names == ("a",) and g.excluded["small groups"] == {"b": 1, "c": 1}
    with pytest.raises(ValueError, match="no group has at least 5 images"):
        group_index(values, min_size=5)
    with pytest.raises(ValueError, match="every image lacks a group value"):
        group_index([None, None])


def test_label_types_through_wordnet_hypernyms(wn, tmp_path):
    syn = [["dog.n.01"], ["criminal.n.01"], ["mug_shot.n.01"], ["hand.n.01"], ["car.n.01"], ["woman.n.01"], [],
           ["car.n.01", "cat.n.01"]]
    names = ["dog", "criminal", "mugshot", "hand", "car", "woman", "x", "carcat"]
    got = label_types(names, syn, wn)
    types = [t.types for t in got]
    # carcat: a name WordNet lacks is typed by all its synsets
    assert types == [{"Non-Human"}, {"Human", "Crime"}, {"Crime"}, {"Possibly-Human"}, set(), {"Human"}, set(),
                     {"Non-Human"}]
    assert got[0].why == ["Non-Human <- animal.n.01"] and got[0].sense == ["dog.n.01"]
    assert got[7].sense == ["car.n.01", "cat.n.01"]
    md = type_table(names, got, {"car": {"Crime"}})
    assert "| car | car.n.01 | Crime | override file |" in md and "| x |" not in md
    assert "| criminal | criminal.n.01 | Human, Crime | Human <- person.n.01; Crime <- criminal.n.01 |" in md
    assert "| carcat | car.n.01, cat.n.01 | Non-Human | Non-Human <- animal.n.01 |" in md
    # labels with the demo vocabulary's synset sets (six lexnames): by the most frequent of its own
    # senses a toy (plaything.n.01) and a flag (flag.n.01) have no type, a printer (printer.n.02,
    # the machine; printer.n.01 is the person, not in the vocabulary) none, and arab keeps its only
    # sense there, the horse; the union of their synsets types toy by toy_dog.n.01 and flag by
    # iris.n.01. `human` (homo.n.02, under animal.n.01 too) is Human, not Non-Human.
    poly = ["toy", "flag", "printer", "arab", "human"]
    poly_syn = [["miniature.n.02", "plaything.n.01", "toy.n.02", "toy.n.03", "toy_dog.n.01"],
                ["flag.n.01", "flag.n.06", "flag.n.07", "iris.n.01", "pin.n.08"],
                ["printer.n.02", "printer.n.03"], ["arabian.n.02"], ["homo.n.02"]]
    got = label_types(poly, poly_syn, wn)
    assert [t.types for t in got] == [set(), set(), set(), {"Non-Human"}, {"Human"}]
    assert got[0].sense == ["plaything.n.01"] and got[2].sense == ["printer.n.02"]
    assert got[4].why == ["Human <- homo.n.02", "Non-Human <- animal.n.01 (Human takes precedence)"]
    assert [t.types for t in label_types(poly, poly_syn, wn, senses="all")] == [
        {"Non-Human"}, {"Possibly-Human"}, set(), {"Non-Human"}, {"Human"}]
    with pytest.raises(ValueError, match="senses='most'"):
        label_types(poly, poly_syn, wn, senses="most")
    (tmp_path / "t.yaml").write_text("car: Crime\nbike: [Human, Robot]\n")
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['Robot'\]"):
        read_type_overrides(tmp_path / "t.yaml")
    (tmp_path / "t.yaml").write_text("car: Crime\nbike: [Human, Non-Human]\n")
    assert read_type_overrides(tmp_path / "t.yaml") == {"car": {"Crime"}, "bike": {"Human", "Non-Human"}}
    assert TYPES == ("Human", "Possibly-Human", "Non-Human", "Crime")
    # every root is a WordNet 3.0 synset (a misspelt one would silently type nothing), and the
    # glosses are the senses meant
    glosses = {r: wn.synset(r).definition() for roots in TYPE_ROOTS.values() for r in roots}
    assert "likeness of a person" in glosses["portrait.n.02"] and "replica of a person" in glosses["doll.n.01"]
    assert "law" in glosses["crime.n.01"] and "photograph" in glosses["mug_shot.n.01"]
