"""The rehearsal's stages (bench/rehearsal.py): each one's spark-submit arguments with `make
demo`'s flags, the directories it reads and writes, and the checks that its output is complete."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# make demo's flags (Makefile: TAIL_THRESHOLD, FORMAT, SHARD_SIZE, MAX_SIDE, ALPHA, SEED, EPOCHS)
TAIL_THRESHOLD, FORMAT, SHARD_SIZE, MAX_SIDE, ALPHA, SEED, EPOCHS = 10, "wds,ffcv", 250, 320, 0.7, 0, 1
STAGES = ("ingest", "dedup", "vocab", "label", "shards", "resample")


@dataclass(frozen=True)
class Stage:
    name: str
    argv: list[str] | None  # the job and its flags (after spark-submit's); None: run in-process
    inputs: tuple[Path, ...]
    output: Path

    def describe(self) -> str:
        if self.argv is None:
            return "stand-in for jobs/ingest.py (not on this branch yet): JPEGs extracted, manifest written in-process"
        return "spark-submit " + " ".join(self.argv)


def stage_commands(out: Path, corpus: Path, images: int, ingest_job: bool) -> list[Stage]:
    manifest = out / "ingest" / "manifest.parquet"
    kept = out / "dedup" / "manifest.parquet"
    # the images dedup and shards decode: the corpus tars (the ingest job's manifest points into
    # them) or the stand-in's extracted files
    pixels = corpus if ingest_job else out / "ingest" / "images"
    ingest = (["jobs/ingest.py", "--format", "img2dataset", "--input", str(corpus), "--out", str(out / "ingest")]
              if ingest_job else None)
    return [
        Stage("ingest", ingest, (corpus,), out / "ingest"),
        Stage("dedup", ["jobs/dedup.py", "--manifest", str(manifest), "--eval", str(out / "eval"), "--out",
                        str(out / "dedup"), "--method", "phash"], (manifest, pixels, out / "eval"), out / "dedup"),
        Stage("vocab", ["jobs/vocab.py", "--manifest", str(kept), "--out", str(out / "vocab")], (kept,), out / "vocab"),
        Stage("label", ["jobs/label.py", "--manifest", str(kept), "--vocab", str(out / "vocab"), "--out",
                        str(out / "labeled"), "--tail-threshold", str(TAIL_THRESHOLD)],
              (kept, out / "vocab"), out / "labeled"),
        Stage("shards", ["jobs/shards.py", "--labeled", str(out / "labeled"), "--out", str(out / "shards"),
                         "--format", FORMAT, "--shard-size", str(SHARD_SIZE), "--max-side", str(MAX_SIDE)],
              (out / "labeled", pixels), out / "shards"),
        Stage("resample", ["jobs/resample.py", "--labeled", str(out / "labeled"), "--shards", str(out / "shards"),
                           "--num-samples", str(images), "--alpha", str(ALPHA), "--seed", str(SEED),
                           "--out", str(out / "samples"), "--epochs", str(EPOCHS)],
              (out / "labeled", out / "shards" / "images.parquet"), out / "samples"),
    ]


def rows(path: Path) -> int:
    """Rows of a Parquet file or a Spark output directory (its _ and . files are skipped)."""
    import pyarrow.dataset as ds

    return ds.dataset(str(path), format="parquet").count_rows()


def check_stage(name: str, out: Path, corpus: Path, copied: list[str], images: int) -> dict:
    """Facts about a stage's output; `complete` is whether every one of them holds."""
    if name == "ingest":
        successes = sum(json.loads(p.read_text())["successes"] for p in corpus.glob("*_stats.json"))
        n = rows(out / "ingest" / "manifest.parquet")
        facts = {"rows": n, "corpus_successes": successes, "complete": n == successes
                 and (out / "ingest" / "stats.json").is_file()}
    elif name == "dedup":
        import pyarrow.parquet as pq

        dups = pq.read_table(out / "dedup" / "duplicates.parquet").to_pylist()
        matched = {d["eval_id"] for d in dups}
        removed = {d["pretrain_id"] for d in dups}
        n_in, n_out = rows(out / "ingest" / "manifest.parquet"), rows(out / "dedup" / "manifest.parquet")
        want = {f"copy_{k}.jpg" for k in copied}
        facts = {"rows_in": n_in, "rows_kept": n_out, "removed": len(removed), "copies_found": len(want & matched),
                 "copies": len(want), "new_matched": len([e for e in matched if e.startswith("new_")])}
        facts["complete"] = (want <= matched and facts["new_matched"] == 0 and n_out == n_in - len(removed)
                             and (out / "dedup" / "stats.json").is_file())
    elif name == "vocab":
        facts = {"labels": rows(out / "vocab" / "vocab.parquet"),
                 "images": rows(out / "vocab" / "image_hashtags.parquet")}
        facts["complete"] = facts["labels"] > 0 and facts["images"] == rows(out / "dedup" / "manifest.parquet") \
            and (out / "vocab" / "stats.json").is_file()
    elif name == "label":
        facts = {"rows": rows(out / "labeled" / "labeled.parquet")}
        facts["complete"] = 0 < facts["rows"] <= rows(out / "dedup" / "manifest.parquet") \
            and (out / "labeled" / "stats.json").is_file()
    elif name == "shards":
        shards = out / "shards"
        stored = rows(shards / "images.parquet")
        rejects = rows(shards / "rejects.parquet") if (shards / "rejects.parquet").exists() else 0
        facts = {"stored": stored, "rejects": rejects, "tars": len(list(shards.glob("*.tar"))),
                 "betons": len(list(shards.rglob("*.beton")))}
        facts["complete"] = (stored + rejects == rows(out / "labeled" / "labeled.parquet") and facts["tars"] > 0
                             and facts["betons"] > 0 and (shards / "_SUCCESS").is_file())
    elif name == "resample":
        facts = {"samples": rows(out / "samples" / "samples.parquet")}
        facts["complete"] = facts["samples"] == images and (out / "samples" / "index").is_dir() \
            and (out / "samples" / "stats.json").is_file()
    else:
        raise ValueError(f"unknown stage {name!r}; stages: {STAGES}")
    return facts
