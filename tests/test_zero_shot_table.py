"""transfer.zero_shot_table: the majority rate computed by hand, bootstrap CIs around the observed
rates, paired differences, and results from another task refused."""
import json

import pytest

from tests.litkit import write_colour_task
from transfer.zero_shot_table import main


def test_table_of_both_routes_and_the_majority_rate(tmp_path):
    task = write_colour_task(tmp_path / "task", per_class=3)
    (task / "train" / "red" / "extra.png").write_bytes((task / "train" / "red" / "0.png").read_bytes())
    n = 24  # 8 colours x 3 val images, classes sorted: black, blue, gray, green, orange, purple, red, yellow
    lit = {"val_correct": [1] * 20 + [0] * 4, "val_top5_correct": [1] * n}
    wn = {"val_correct": [1] * 6 + [0] * 18, "val_top5_correct": [1] * 12 + [0] * 12}
    for name, r in (("lit", lit), ("wn", wn)):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    out = tmp_path / "zero_shot.json"
    res = main([f"data={task}", f"lit={tmp_path / 'lit.json'}", f"wordnet_average={tmp_path / 'wn.json'}",
                f"out={out}", "n_boot=500"])
    assert res["majority_class"] == "red"  # 4 train images, the others 3
    m = res["methods"]
    assert m["majority"]["top1"]["mean"] == pytest.approx(3 / n)  # the 3 red val images
    assert m["lit"]["top1"]["mean"] == pytest.approx(20 / n) and m["wordnet_average"]["top5"]["mean"] == 0.5
    for s in (m["lit"]["top1"], m["wordnet_average"]["top1"], m["majority"]["top1"]):
        lo, hi = s["ci95"]
        assert lo < s["mean"] < hi and hi - lo < 0.5
    d = res["differences"]["lit - wordnet_average"]["top1"]
    assert d["diff"] == pytest.approx(14 / n) and d["significant"]
    assert set(res["differences"]) == {"lit - wordnet_average", "lit - majority"}
    md = out.with_suffix(".md").read_text()
    assert "| majority (red) | 12.5 [" in md and "| lit - wordnet_average | +58.3 [" in md

    (tmp_path / "short.json").write_text(json.dumps({"val_correct": [1] * 5, "val_top5_correct": [1] * 5}))
    with pytest.raises(ValueError, match="short.json: val_correct holds 5 val images, the task has 24"):
        main([f"data={task}", f"lit={tmp_path / 'short.json'}", f"out={out}"])
