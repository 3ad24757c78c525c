"""Issue 8's evidence: planted resized / re-encoded / cropped / mirrored copies of held-out
openclipart images are found by jobs/dedup.py, look-alike non-duplicates are not.

The slow test is the issue's case (200 images); the fast one a 12-image slice of it. False
positives are asserted outside openclipart's star family (tests/helpers/dedupkit.py STAR_FAMILY), whose
members are indistinguishable at 32x32 and are counted on their own line.
"""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dedup.phash import low_information, phash_image
from jobs import dedup as dedup_job
from tests.helpers.dedupkit import REQUIRED, build_case, heldout_rows, score

OPENCLIPART = Path("/usr/share/openclipart")
pytestmark = pytest.mark.skipif(not (OPENCLIPART / "png").is_dir(), reason="openclipart-png is not installed")


def run_case(spark, tmp_path, n: int, **method) -> dict:
    truth = build_case(heldout_rows(str(OPENCLIPART)), n, tmp_path / "case", seed=0)
    cfg = dedup_job.DedupConfig(manifest=str(tmp_path / "case" / "pretrain.parquet"),
                            eval=(str(tmp_path / "case" / "eval.parquet"),), out=str(tmp_path / "out"), **method)
    stats = dedup_job.run(spark, cfg)
    unjudged = set()  # low-information evaluation images: counted by the job, never matched
    for r in pq.read_table(tmp_path / "case" / "eval.parquet").to_pylist():
        if low_information(phash_image(r["image"])[0]):
            unjudged.add(r["image_id"])
    assert stats["eval"]["eval"]["unreadable"].get("low_information", 0) == len(unjudged)
    result = score(pq.read_table(tmp_path / "out" / "duplicates.parquet").to_pylist(), truth, unjudged)
    result.update(eval_images=n, neighbour_pairs=stats["neighbour_pairs"], index=stats["index"]["name"],
                  threshold=cfg.threshold)
    print(f"\nconstructed case, {n} held-out images ({len(unjudged)} low-information, not judged), "
          f"{stats['method']['name']}, {stats['method']['rule']}:")
    for how, r in result["recall"].items():
        print(f"  recall {how:>6}: {r:.3f}" + ("  (flips: reported on their own line)" if how == "flip" else ""))
    print(f"  false positive pairs: {result['false_positive_pairs']} ({result['false_positive_pairs_stars']} "
          f"with an evaluation image of the star family, {result['false_positive_pairs_other']} others; "
          f"(look-alikes matched: {result['lookalikes_matched']} of {result['lookalikes']})")
    print(f"  index: {stats['index']['name']}; neighbour pairs reported: {stats['neighbour_pairs']}")
    print("  " + json.dumps(result["false_pairs"]))
    return result


def test_constructed_case_small(spark, tmp_path):
    r = run_case(spark, tmp_path, 12)
    assert r["lookalikes"] == 12
    judged = 12 - r["unjudged_eval_images"]
    assert judged >= 6, r
    for how in ("resize", "jpeg", "crop"):  # at most one miss each
        assert r["recall"][how] >= (judged - 1) / judged - 1e-9, (how, r)
    assert r["false_positive_pairs_other"] <= 1, r


@pytest.mark.slow
def test_constructed_case_200(spark, tmp_path):
    """Issue 17's targets for the default method: recall >= 0.95 for resize, JPEG q70, crop <= 10%
    and flips; look-alikes matched <= 2%. Crop 10-20%, brightness and rotation are printed."""
    r = run_case(spark, tmp_path, 200)
    assert r["lookalikes"] == 200
    for how in REQUIRED:
        assert r["recall"][how] >= 0.95, (how, r)
    # other "false" pairs are mostly planted copies matched to a second held-out image showing the
    # same picture (e.g. murcia_01 is held out under two folders)
    assert r["lookalikes_matched"] <= 0.02 * 200, r
