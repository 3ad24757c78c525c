"""`python -m transfer.groups geo|associations|harmful|retrieval` end to end on tiny image sets
the test writes, with a real regnety_002 export whose head ignores the image: zero weights and a
bias of log(P), so every image's hashtag probabilities are exactly P and every figure is known."""
import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tests.helpers.images import drawing

HASHTAGS = ["dog", "cat", "truck", "mugshot", "flower", "thief"]
SYNSETS = [["dog.n.01"], ["cat.n.01"], ["truck.n.01"], ["mug_shot.n.01"], ["flower.n.01"], ["thief.n.01"]]
P = [0.40, 0.25, 0.15, 0.09, 0.06, 0.05]  # the top 5 are the first five; thief (Human, Crime) is 6th
BASE = ["img_size=32", "batch_size=16", "n_boot=200"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from trainer.export import export_model
    from trainer.models import create_model

    base = tmp_path_factory.mktemp("groups")
    torch.manual_seed(0)
    model = create_model("regnety_002", len(HASHTAGS), "linear", 32)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.log(torch.tensor(P)))
    vocab = base / "vocab"
    vocab.mkdir()
    pq.write_table(pa.Table.from_pylist([{"label": i, "name": h, "synsets": s}
                                         for i, (h, s) in enumerate(zip(HASHTAGS, SYNSETS))]), vocab / "vocab.parquet")
    export_model(model, base / "export", {"model": "regnety_002", "head": "linear", "num_classes": len(HASHTAGS),
                                          "labels": HASHTAGS, "img_size": 32, "input_size": [3, 32, 32],
                                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                          "config": {"vocab": str(vocab), "loss": "softmax"}})
    return base / "export"


def _folder(root, sizes: dict, same_picture: bool = False):
    """root/<group>/<i>.png; same_picture: every image of a group is one drawing."""
    for g, (name, n) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            drawing(g if same_picture else 10 * g + i, size=(64, 48)).save(root / name / f"{i}.png")
    return root


def test_dispatcher_help_and_usage_errors(capsys):
    from transfer.groups.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "geo|associations|harmful|retrieval" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["fairness"])
    assert e.value.code == 2 and "unknown analysis 'fairness'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["harmful", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "report_threshold" in out and "min_group_size" in out
    with pytest.raises(SystemExit) as e:
        main(["associations", "model=x", "data=y", "out=r.json"])  # group is required
    assert e.value.code == 2 and "missing required keys: group" in capsys.readouterr().err


@pytest.mark.parametrize("analysis,cls,required", [("geo", "GeoConfig", ["model", "data", "out"]),
                                                   ("associations", "AssociationsConfig", ["model", "data", "out", "group"]),
                                                   ("harmful", "HarmfulConfig", ["model", "data", "out", "group"]),
                                                   ("retrieval", "RetrievalConfig", ["model", "data", "out", "attribute"])])
def test_every_key_has_a_help_line(analysis, cls, required, capsys):
    import dataclasses
    import importlib
    import re

    from transfer.groups.__main__ import main

    with pytest.raises(SystemExit) as e:
        main([analysis, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: python -m transfer.groups {analysis} ")
    keys = out.split("\nkeys (key=value", 1)[1].splitlines()[1:]
    lines = {ln.split()[0]: re.split(r"\s{2,}", ln.strip(), maxsplit=3) for ln in keys}
    for f in dataclasses.fields(getattr(importlib.import_module(f"transfer.groups.{analysis}"), cls)):
        assert len(lines[f.name]) == 4 and lines[f.name][3], f"{analysis}: key {f.name} has no help line"
    assert sorted(n for n, cols in lines.items() if cols[2] == "required") == sorted(required)


def test_associations_and_harmful_on_a_folder(export, tmp_path):
    from transfer.groups.__main__ import main

    data = _folder(tmp_path / "data", {"blue": 4, "red": 4, "tiny": 1})
    common = [f"model={export}", f"data={data}", "group=folder", "min_group_size=2", *BASE]
    out = tmp_path / "assoc" / "r.json"
    r = main(["associations", *common, f"out={out}", "top=3", "hashtag=mugshot"])
    assert [g["name"] for g in r["groups"]] == ["blue", "red"] and r["images"] == 8
    assert r["excluded"] == {"missing value": 0, "small groups": {"tiny": 1}}
    assert np.allclose(r["rates"], [[1, 1, 1, 1, 1, 0]] * 2)  # every image's top 5: the first five hashtags
    assert [[e["hashtag"] for e in t] for t in r["top"]] == [["dog", "cat", "truck"]] * 2
    assert all(e["diff"] == 0 and e["relative"] == 0 for t in r["top"] for e in t)
    # 4 of 4 in both groups: each rate's exact low end 0.025 ** (1 / 4), each difference +-(1 - it)
    assert all(e["rate_ci95"] == pytest.approx([0.397635, 1]) and e["diff_ci95"] == pytest.approx([-0.602365, 0.602365])
               for t in r["top"] for e in t)
    assert [(e["count"], e["rate"]["value"]) for e in r["hashtag"]] == [(4, 1.0)] * 2
    assert all(e["rate"]["ci95"] == pytest.approx([0.397635, 1]) for e in r["hashtag"])
    saved = json.loads(out.read_text())
    assert saved["config"]["group"] == "folder" and saved["figures"].keys() == {"differences", "hashtag"}
    assert out.with_suffix(".md").read_text().startswith("## Hashtag associations by folder")
    for p in saved["figures"].values():
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "harm" / "r.json"
    r = main(["harmful", *common, f"out={out}"])
    # dog, cat: Non-Human (p .40, .25); mugshot: Crime (p .09); truck, flower: no type; thief is 6th
    want = {"0.0": [0, 0, 1, 1, 1], "0.1": [0, 0, 1, 0, 1], "0.3": [0, 0, 1, 0, 1], "0.8": [0, 0, 0, 0, 0]}
    for t, row in want.items():
        for g in range(2):
            assert [f["value"] for f in r["thresholds"][t]["rate"][g]] == row, (t, g)
            # 0 or 4 of 4: the exact bounds [0, 1 - 0.025 ** (1 / 4)] and [0.025 ** (1 / 4), 1]
            assert [f["ci95"] for f in r["thresholds"][t]["rate"][g]] == [
                pytest.approx([0, 0.602365] if v == 0 else [0.397635, 1]) for v in row]
    assert r["label_types"] == {"cat": ["Non-Human"], "dog": ["Non-Human"], "mugshot": ["Crime"],
                                "thief": ["Crime", "Human"]}
    assert r["label_type_counts"] == {"Human": 1, "Possibly-Human": 0, "Non-Human": 2, "Crime": 2}
    md = out.with_suffix(".md").read_text()
    assert "| thief | thief.n.01 | Human, Crime | Human <- person.n.01; Crime <- criminal.n.01 |" in md
    assert "| blue | 4 | 0.0% [0.0, 60.2] | 0.0% [0.0, 60.2] | 100.0% [39.8, 100.0] |" in md


def test_bad_input_is_a_clear_error(export, tmp_path):
    from transfer.groups.harmful import main

    data = _folder(tmp_path / "data", {"a": 2})
    with pytest.raises(ValueError, match="not random init"):
        main(["model=random:regnety_002", f"data={data}", "group=folder", f"out={tmp_path / 'r.json'}", *BASE])
    with pytest.raises(ValueError, match="no column 'skin_tone' in this image set; columns: folder, labels"):
        main([f"model={export}", f"data={data}", "group=skin_tone", f"out={tmp_path / 'r.json'}", *BASE])
    from transfer.groups.associations import main as associations

    with pytest.raises(ValueError, match="hashtag='zebra' is not among the model's 6 hashtags"):
        associations([f"model={export}", f"data={data}", "group=folder", "hashtag=zebra",
                      f"out={tmp_path / 'r.json'}", *BASE])


def test_geo_on_a_dollar_street_layout(export, tmp_path):
    from transfer.groups.__main__ import main

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    rows = [  # id, country, region, topics, household, income
        ("1", "A", "af", ["dog"], "h1", 50), ("2", "A", "af", ["cat"], "h1", 50),
        ("3", "A", "af", ["dog", "truck"], "h1", 50), ("4", "A", "af", ["truck"], "h2", 500),
        ("5", "B", "eu", ["dog"], "h3", 3000), ("6", "B", "eu", ["cat"], "h3", 3000),
        ("7", "B", "eu", ["place where eating dinner"], "h4", 3000), ("8", "B", "eu", ["truck", "cat"], "h4", 3000)]
    with open(root / "images_v2.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "country.name", "region.id", "topics", "place", "income", "imageRelPath"])
        for i, c, reg, topics, home, income in rows:
            Image.fromarray(np.full((20, 20, 3), int(i) * 20, np.uint8)).save(root / "images" / f"{i}.png")
            w.writerow([i, c, reg, json.dumps(topics), home, income, f"images/{i}.png"])
    out = tmp_path / "geo" / "r.json"
    r = main(["geo", f"model={export}", f"data={root}", f"out={out}", "k=2", *BASE])
    # class scores (average of mapped hashtags): dog .40, cat .25, truck .15: top-1 dog, top-2 dog + cat
    assert r["classes"] == ["cat", "dog", "truck"] and r["unmapped_classes"] == ["place where eating dinner"]
    assert r["mapping"] == {"cat": ["cat"], "dog": ["dog"], "truck": ["truck"]}
    assert r["images_without_mapped_label"] == 1
    s = r["swag"]
    # A: images 1, 3 right (dog), 2, 4 wrong -> 1/2; B (7 left out): 5 right, 6, 8 wrong -> 1/3
    assert [a["value"] for a in s["accuracy"]] == pytest.approx([0.5, 1 / 3])
    assert [d["value"] for d in s["diff"]] == pytest.approx([0.5 - 1 / 3, 1 / 3 - 0.5])
    # class accuracy A: cat 0, dog 1, truck 1/2; B: cat 0, dog 1, truck 0.
    # A vs B: no class below 0.8x; B vs A: truck 0 < 0.4 -> 1 of 3 shared classes
    assert np.allclose(np.array(s["matrix"], dtype=float), [[0, 0], [100 / 3, 0]])
    assert s["shared_classes"] == [[3, 3], [3, 3]]
    lo, hi = np.array(s["matrix_ci95"], dtype=float)
    assert lo[1, 0] <= 100 / 3 <= hi[1, 0]
    # top-2 hits: 1, 2, 3 yes; 4 no; 5, 6 yes; 8 yes (cat). Households: h1 1, h2 0, h3 1, h4 1
    region = r["seer"]["region"]
    assert [g["name"] for g in region["groups"]] == ["af", "eu"]
    assert region["excluded"] == {"missing value": 0, "small groups": {}, "no household": 0}
    assert [v["value"] for v in region["rate"]] == [0.5, 1.0]  # per image, af would be 3/4
    assert region["rate"][1]["ci95"] == pytest.approx([0.158114, 1.0])  # 2 of 2 households: 0.025 ** (1 / 2)
    income = r["seer"]["income_bucket"]
    assert [g["name"] for g in income["groups"]] == ["high", "low", "medium"]
    assert [v["value"] for v in income["rate"]] == [1.0, 1.0, 0.0]
    saved = json.loads(out.read_text())
    assert saved["figures"].keys() == {"accuracy_by_country", "rule_matrix", "top2_by_region", "top2_by_income_bucket"}
    assert "| B | 4 | 33.3%" in out.with_suffix(".md").read_text()

    # a given mapping instead of WordNet: class cat <- #dog (.40), dog <- #cat (.25): top-1 is cat,
    # right for images 2 (A: 1/4) and 6, 8 (B: 2/3); the unlisted class is unmapped
    (tmp_path / "m.yaml").write_text("cat: dog\ndog: [cat]\ntruck: [truck]\n")
    r = main(["geo", f"model={export}", f"data={root}", f"out={tmp_path / 'geo2' / 'r.json'}", "k=2",
              f"mapping={tmp_path / 'm.yaml'}", *BASE])
    assert r["mapping"] == {"cat": ["dog"], "dog": ["cat"], "truck": ["truck"]}
    assert [a["value"] for a in r["swag"]["accuracy"]] == pytest.approx([1 / 4, 2 / 3])
    (tmp_path / "m.yaml").write_text("cat: [zebra]\n")
    with pytest.raises(ValueError, match=r"names hashtags the model lacks: \['zebra'\]"):
        main(["geo", f"model={export}", f"data={root}", f"out={tmp_path / 'geo2' / 'r.json'}",
              f"mapping={tmp_path / 'm.yaml'}", *BASE])


def test_retrieval_precision_at_k_with_a_random_trunk(tmp_path):
    from transfer.groups.__main__ import main

    # three groups of four copies of one drawing each: a copy's nearest neighbours are the other
    # three copies (cosine 1), then other drawings
    data = _folder(tmp_path / "data", {"p": 4, "q": 4, "r": 4}, same_picture=True)
    out = tmp_path / "ret" / "r.json"
    r = main(["retrieval", "model=random:regnety_002", f"data={data}", "attribute=folder", f"out={out}",
              "ks=[1,3,5]", *BASE])
    assert r["queries"] == 12 and r["database_images"] == 12
    assert np.allclose([[f["value"] for f in row] for row in r["precision"]], [[1, 1, 0.6]] * 3)
    assert [row[0]["value"] for row in r["diff"]] == [0.0] * 3
    with pytest.raises(ValueError, match="K=12 neighbours asked for, but the database has 11"):
        main(["retrieval", "model=random:regnety_002", f"data={data}", "attribute=folder", f"out={out}",
              "ks=[12]", *BASE])
