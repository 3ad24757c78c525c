"""bench/cost_model.py: linear scaling of a rehearsal's per-image figures, and GPU rows that
come only from published figures or from a throughput given as an input."""
import pytest

from bench import cost_model as CM

RESULT = {"images": 1000, "machine": "test", "corpus_bytes": 5_000_000,
          "stages": [{"stage": "vocab", "cpu_s_per_image": 0.01, "output_bytes": 2_000_000},
                     {"stage": "shards", "cpu_s_per_image": 0.03, "output_bytes": 30_000_000}]}


def test_stage_rows_scale_linearly():
    rows = {r["stage"]: r for r in CM.stage_rows(RESULT)}
    assert rows["vocab"]["core_hours_1B"] == pytest.approx(0.01 * 1e9 / 3600)
    assert rows["shards"]["storage_tb_3.6B"] == pytest.approx(30_000 * 3.6e9 / 1e12)
    assert rows["total (stages)"]["core_hours_3.6B"] == pytest.approx(0.04 * 3.6e9 / 3600)
    assert rows["corpus (input, img2dataset tars + parquet)"]["storage_tb_1B"] == pytest.approx(5.0)


def test_gpu_rows():
    # SEER: 512 GPUs x 8 days for 1B samples
    assert CM.seer_gpu_hours(1_000_000_000) == 512 * 8 * 24
    assert CM.swag_gpu_hours(3600, 1.0) == 1.0
    md = CM.markdown(RESULT)
    assert "not measured here" in md and "pass gpu_images_per_s=" in md and "Linear extrapolation" in md
    assert "(at 1000 img/s/GPU, an input)" in CM.markdown(RESULT, 1000.0)


def test_scaling_separates_fixed_and_marginal_cost():
    def result(n, vocab_cpu, shards_cpu):
        return {"images": n, "machine": "test", "corpus_bytes": 5 * n,
                "stages": [{"stage": s, "cpu_s": c, "cpu_s_per_image": c / n, "wall_s": c, "output_bytes": n,
                            "driver_peak_rss_mb": 100.0, "executor_peak_rss_mb": 200.0}
                           for s, c in (("vocab", vocab_cpu), ("shards", shards_cpu))]}
    small, large = result(1000, 40 + 0.002 * 1000, 10 + 0.005 * 1000), result(10000, 40 + 0.002 * 10000, 10 + 0.05)
    rows = {r["stage"]: r for r in CM.scaling(small, large)}
    assert rows["vocab"]["marginal_cpu_s"] == pytest.approx(0.002) and rows["vocab"]["fixed_cpu_s"] == pytest.approx(40)
    assert rows["vocab"]["per_image_ratio"] == pytest.approx((60 / 10000) / (42 / 1000))
    md = CM.markdown(large, small=small)
    assert "marginal CPU cost per image between the rehearsals at 1,000 and 10,000" in md
    assert f"| vocab | {0.002:.2e} |" in md
