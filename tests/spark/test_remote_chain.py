"""The whole chain from object storage under spark-submit: a table of s3:// and signed http(s)://
references -> ingest -> dedup -> vocab -> label -> shards -> resample -> a few pretraining steps,
with real servers on loopback (moto's S3 server, an HTTP server). The shards equal, byte for byte,
those written from local copies of the same images, and no credential or signature reaches any
log, stats file, rejects table, report or shard."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from jobs.shards import ShardsConfig, run as shards
from schemas.shard_set import read_shard_set_meta
from tests.helpers import ROOT
from tests.helpers.images import drawing
from tests.helpers.launch import project_env
from tests.helpers.runs import TINY_PRETRAIN
from tests.helpers.servers import S3_ENV, http_server, upload_tree

SPARK_SUBMIT = str(Path(sys.executable).parent / "spark-submit")
SIGNATURE = "X-Amz-Signature=f00dfacecafe5ec2e7"
N = 30


def tags_of(k: int) -> str:
    return " ".join(t for t, keep in (("tree", True), ("dog", k % 2 == 0), ("cat", k % 3 == 0),
                                      ("red", k % 5 == 0)) if keep)


def submit(job: str, *args: str) -> str:
    r = subprocess.run([SPARK_SUBMIT, "--master", "local[2]", "--conf", "spark.ui.enabled=false",
                        str(ROOT / "jobs" / f"{job}.py"), *args],
                       env=project_env(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{job}: {r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def files_with(root: Path, needles: list[str], skip: set[str]) -> list[str]:
    """Files under `root` (not under a `skip` directory name) whose bytes hold any needle."""
    hits = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not skip & set(p.relative_to(root).parts):
            data = p.read_bytes()
            hits += [f"{p.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return hits


def test_chain_from_s3_and_http_equals_the_local_chain_and_leaks_nothing(spark, s3, tmp_path):
    local = tmp_path / "imgs"
    local.mkdir()
    for k in range(N):
        drawing(k, (96, 72)).save(local / f"{k:03d}.jpg", quality=92)
    evals = tmp_path / "eval" / "things"
    evals.mkdir(parents=True)
    for k in (4, 11):  # two pretraining images are evaluation images too: dedup removes them
        shutil.copyfile(local / f"{k:03d}.jpg", evals / f"e{k}.jpg")
    with http_server(local) as (url, log):
        assert upload_tree(s3.client, s3.name, local, "imgs/") == N
        # images 0-27 in S3; 28 over signed HTTP; a signed HTTP reference to a missing file
        refs = {f"{k:03d}": f"s3://{s3.name}/imgs/{k:03d}.jpg" for k in range(N - 2)}
        refs[f"{N - 2:03d}"] = f"{url}/{N - 2:03d}.jpg?{SIGNATURE}"
        refs["gone"] = f"{url}/gone.jpg?{SIGNATURE}"
        csv = tmp_path / "corpus.csv"
        csv.write_text("id,url,tags\n" + "".join(f"{i},{u},{tags_of(int(i) if i != 'gone' else 0)}\n"
                                                 for i, u in refs.items()))
        out = tmp_path / "out"
        logs = [submit("ingest", "--format", "table", "--input", str(csv), "--out", str(out / "ingest"),
                       "--id", "id", "--image", "url", "--tags", "tags", "--tags-sep", " "),
                submit("dedup", "--manifest", str(out / "ingest" / "manifest.parquet"), "--eval", str(evals.parent),
                       "--out", str(out / "dedup"), "--method", "phash"),
                submit("vocab", "--manifest", str(out / "dedup" / "manifest.parquet"), "--out", str(out / "vocab")),
                submit("label", "--manifest", str(out / "dedup" / "manifest.parquet"), "--vocab", str(out / "vocab"),
                       "--out", str(out / "labeled"), "--tail-threshold", "8"),
                submit("shards", "--labeled", str(out / "labeled"), "--out", str(out / "shards"), "--shard-size", "8",
                       "--max-side", "48"),
                submit("resample", "--labeled", str(out / "labeled"), "--shards", str(out / "shards"),
                       "--out", str(out / "samples"), "--num-samples", "64", "--seed", "1")]
    dedup = json.loads((out / "dedup" / "stats.json").read_text())
    assert dedup["matches"]["pretrain_images_removed"] == 2, dedup["matches"]
    stats = json.loads((out / "shards" / "stats.json").read_text())
    # 29 images referenced (0-27 in S3, 28 over HTTP), 2 removed by dedup, one reference missing
    assert stats["images"] == 27 and {k: v for k, v in stats["rejected_images"].items() if v} == {"missing_file": 1}
    rejects = pq.read_table(out / "shards" / "rejects.parquet").to_pylist()
    assert [(r["image_id"], r["reason"]) for r in rejects] == [("gone", "missing_file")]
    assert log.requests[f"/{N - 2:03d}.jpg"] >= 1  # read over HTTP, not from disk

    # the same labelled images from local copies: byte-identical shards
    labeled = pq.read_table(out / "labeled" / "labeled.parquet")
    local_refs = [str(local / Path(r.split("?")[0]).name) for r in labeled["image"].to_pylist()]
    copy = tmp_path / "labeled-local" / "labeled.parquet"
    copy.mkdir(parents=True)
    t = labeled.set_column(labeled.column_names.index("image"), "image", pa.array(local_refs, pa.string()))
    pq.write_table(t.replace_schema_metadata(labeled.schema.metadata), copy / "part-0.parquet")
    shards(spark, ShardsConfig(labeled=str(copy.parent), out=str(tmp_path / "shards-local"), shard_size=8,
                               max_side=48))
    remote_set, local_set = read_shard_set_meta(out / "shards"), read_shard_set_meta(tmp_path / "shards-local")
    assert [(s.name, s.sha256) for s in remote_set.shards] == [(s.name, s.sha256) for s in local_set.shards]
    for s in remote_set.shards:
        assert (out / "shards" / s.name).read_bytes() == (tmp_path / "shards-local" / s.name).read_bytes()

    # a few pretraining steps on the shards written from S3
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "trainer.pretrain", *TINY_PRETRAIN, f"shards={out / 'shards'}",
                        f"sample_index={out / 'samples'}", f"vocab={out / 'vocab'}", f"run_dir={run}",
                        "batch_size=8", "total_samples=24", "workers=0"],
                       env=project_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "result.json").read_text())["step"] == 3

    # nothing secret anywhere: logs, stats, rejects, reports, shards, the run. The tables that carry
    # the manifest's references as given (ingest's and dedup's manifest, labeled, samples) are data.
    secrets = [S3_ENV["AWS_SECRET_ACCESS_KEY"], SIGNATURE.split("=")[1]]
    assert not [s for s in secrets if any(s in text for text in logs + [r.stdout, r.stderr])]
    data_tables = {"manifest.parquet", "labeled.parquet", "samples.parquet", "kept.parquet"}
    assert files_with(out, secrets, data_tables) == [] and files_with(run, secrets, set()) == []
    assert files_with(out / "shards", [SIGNATURE.split("=")[1]], set()) == []
    assert schemas.text_column(labeled.column_names) is None
