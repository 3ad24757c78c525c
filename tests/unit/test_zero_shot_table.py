"""transfer.zero_shot_table: the majority rate computed by hand, bootstrap CIs around the observed
rates, paired differences, and results from another task refused."""
import json

import pytest

from tests.helpers.litkit import write_colour_task
from transfer.zero_shot_table import main


def test_table_of_both_routes_and_the_majority_rate(tmp_path):
    task = write_colour_task(tmp_path / "task", per_class=3)
    for split in ("train", "val"):  # red: 4 train images (the others 3), 4 val images (the others 3)
        (task / split / "red" / "extra.png").write_bytes((task / split / "red" / "0.png").read_bytes())
    n = 25  # classes sorted: black, blue, gray, green, orange, purple, red, yellow
    lit = {"val_correct": [1] * 20 + [0] * 5, "val_top5_correct": [1] * n}
    wn = {"val_correct": [1] * 6 + [0] * 19, "val_top5_correct": [1] * 12 + [0] * 13}
    for name, r in (("lit", lit), ("wn", wn)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    out = tmp_path / "zero_shot.json"
    res = main([f"data={task}", f"lit={tmp_path / 'lit.json'}", f"wordnet_average={tmp_path / 'wn.json'}",
                f"out={out}", "n_boot=500"])
    assert res["majority_class"] == "red"  # 4 train images, the others 3
    m = res["methods"]
    assert m["majority"]["top1"]["mean"] == pytest.approx(4 / n)  # the 4 red val images
    # top-5: red, then the ties by class order (black, blue, gray, green): 4 + 4 x 3 val images
    assert m["majority"]["top5"]["mean"] == pytest.approx(16 / n)
    assert m["lit"]["top1"]["mean"] == pytest.approx(20 / n) and m["wordnet_average"]["top5"]["mean"] == 12 / n
    for s in (m["lit"]["top1"], m["wordnet_average"]["top1"], m["majority"]["top1"]):
        lo, hi = s["ci95"]
        assert lo < s["mean"] < hi and hi - lo < 0.5
    d = res["differences"]["lit - wordnet_average"]["top1"]
    assert d["diff"] == pytest.approx(14 / n) and d["significant"]
    assert set(res["differences"]) == {"lit - wordnet_average", "lit - majority"}
    md = out.with_suffix(".md").read_text()
    assert "| majority (red) | 16.0 [" in md and "| lit - wordnet_average | +56.0 [" in md

    (tmp_path / "short.json").write_text(json.dumps({"val_correct": [1] * 5, "val_top5_correct": [1] * 5}))
    with pytest.raises(ValueError, match="short.json: val_correct holds 5 val images, the task has 25"):
        main([f"data={task}", f"lit={tmp_path / 'short.json'}", f"out={out}"])
