"""bench/rehearsal.py at 300 images: every stage runs by spark-submit on the loopback standalone
cluster, its output is complete, the table has one row per stage with figures from the whole
process tree (driver and executors), and rehearsal.json and the cost model agree with it."""
import json

import pytest

from bench import cost_model
from bench.rehearsal import main, markdown
from bench.rehearsal_stages import STAGES

# ~5 min on the shared 2-core VM (each of the six stages pays a driver JVM, an executor JVM and
# their Python start, ~40 CPU s of fixed cost at any size): too slow for the default tier
pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow]


def test_rehearsal_at_300_images(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["images=300", f"out={out}", f"cache={tmp_path / 'cache'}", "shard_size=100", "keep=true",
                 "eval_copies=3", "eval_new=3", "--cost-model"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "rehearsal.json").read_text())
    assert [s["stage"] for s in result["stages"]] == list(STAGES)
    for s in result["stages"]:
        assert s["rc"] == 0 and s["checks"]["complete"], s
        assert s["output_bytes"] > 0 and s["wall_s"] > 0
        if s["stage"] != "ingest" or result["ingest_job"]:
            # a spark-submit stage: its driver and its executors both ran and were measured
            assert s["driver_cpu_s"] > 0 and s["executor_cpu_s"] > 0, s
            assert s["driver_peak_rss_mb"] > 100 and s["executor_peak_rss_mb"] > 100, s
    dedup = next(s for s in result["stages"] if s["stage"] == "dedup")["checks"]
    assert dedup["copies_found"] == 3 and dedup["new_matched"] == 0
    shards = next(s for s in result["stages"] if s["stage"] == "shards")["checks"]
    assert shards["stored"] > 0 and shards["tars"] > 0 and shards["betons"] > 0
    table = markdown(result)
    assert table in printed
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [*STAGES, "total"]
    assert "not measured here" in printed and "Linear extrapolation" in printed
    rows = {r["stage"]: r for r in cost_model.stage_rows(result)}
    assert rows["total (stages)"]["core_hours_1B"] == pytest.approx(
        sum(s["cpu_s"] for s in result["stages"]) / 300 * 1e9 / 3600)
