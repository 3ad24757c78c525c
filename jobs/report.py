"""Dataset card: SWAG Figure 1, label frequency before/after resampling, head/tail splits, drops.

    python -m jobs.report --manifest build/demo/manifest.parquet --vocab build/demo/vocab \
        --labeled build/demo/labeled --samples build/demo/samples --out build/demo/card \
        [--alpha A] [--tail-threshold T] [--top 20] [--threads N]

Plain Python, no Spark: DuckDB aggregates the Parquet outputs (bounded memory, spills to disk),
pipeline/dataset_card.py draws. --alpha and --tail-threshold default to the values the samples
and labeled stages were run with. Writes OUT/dataset_card.md and OUT/*.png, atomically.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from jobs.lib.config import parse_config
from pipeline import dataset_card as card
from pipeline.normalize import normalize

_INPUTS = {"vocab": ("vocab.parquet", "hashtag_map.parquet", "stats.json"),
           "labeled": ("labeled.parquet", "stats.json"), "samples": ("samples.parquet", "stats.json")}


@dataclass(frozen=True)
class ReportConfig:
    manifest: str = field(metadata={"help": "manifest (Parquet file/directory or JSON Lines)"})
    vocab: str = field(metadata={"help": "output directory of jobs/vocab.py"})
    labeled: str = field(metadata={"help": "output directory of jobs/label.py"})
    samples: str = field(metadata={"help": "output directory of jobs/resample.py"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    alpha: float | None = field(default=None, metadata={"help": "expected head share (default: the samples' own)"})
    tail_threshold: int | None = field(default=None, metadata={"help": "default: the labeled stage's own"})
    top: int = field(default=20, metadata={"help": "canonical hashtags listed in the card"})
    threads: int | None = field(default=None, metadata={"help": "DuckDB threads (default: all cores)"})
    ingest_stats: str | None = field(default=None, metadata={
        "help": "ingest stats.json (default: ingest_stats.json beside the manifest, if any)"})
    dedup_stats: str | None = field(default=None, metadata={"help": "stats.json of jobs/dedup.py, if it ran"})

    def __post_init__(self):
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.tail_threshold is not None and self.tail_threshold < 1:
            raise ValueError(f"--tail-threshold must be >= 1, got {self.tail_threshold}")
        if self.top < 1 or (self.threads is not None and self.threads < 1):
            raise ValueError("--top and --threads must be >= 1")
        if not Path(self.manifest).exists():
            raise ValueError(f"--manifest {self.manifest}: no such file or directory")
        for name in ("ingest_stats", "dedup_stats"):
            if getattr(self, name) is not None and not Path(getattr(self, name)).is_file():
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: no such file")
        for name, files in _INPUTS.items():
            d = Path(getattr(self, name))
            missing = [str(d / f) for f in files if not (d / f).exists()]
            if not d.is_dir() or missing:
                raise ValueError(f"--{name} {d}: " + ("no such directory" if not d.is_dir() else
                                                      f"missing {', '.join(missing)} (did the job finish?)"))


def _scan(path: Path) -> str:
    """DuckDB table function over a Parquet file, a Spark directory of part files, or JSON Lines."""
    if path.name.lower().endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
        return "read_json('{}', format='newline_delimited', ignore_errors=true)".format(str(path).replace("'", "''"))
    return "read_parquet('{}')".format(str(path / "*.parquet" if path.is_dir() else path).replace("'", "''"))


def _counts(con, sql: str) -> dict:
    return dict(con.execute(sql).fetchall())


def aggregate(con, cfg: ReportConfig) -> dict:
    m, vocab_dir = Path(cfg.manifest), Path(cfg.vocab)
    cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_scan(m)}").fetchall()}
    if "image_id" not in cols or not cols & {"hashtags", "caption"}:
        raise ValueError(f"{m}: needs image_id and hashtags and/or caption columns (has {sorted(cols)})")
    tags = ["coalesce(hashtags, [])"] if "hashtags" in cols else []
    if "caption" in cols:  # SWAG-style captions: their #words are hashtags
        tags.append(r"regexp_extract_all(coalesce(caption, ''), '#([\pL\pN\pM_]+)', 1)")
    con.execute(f"CREATE VIEW tags AS SELECT image_id, {' || '.join(tags)} AS t FROM {_scan(m)} "
                "WHERE image_id IS NOT NULL AND image_id <> ''")
    # normalize is Python: run it once per distinct raw string, in batches; the rest stays in DuckDB
    con.execute("CREATE TABLE raw_map (raw VARCHAR, hashtag VARCHAR)")
    distinct = con.cursor().execute("SELECT DISTINCT raw FROM (SELECT unnest(t) AS raw FROM tags) "
                                    "WHERE raw IS NOT NULL")
    while batch := [r[0] for r in distinct.fetchmany(100_000)]:
        con.register("batch", pa.table({"raw": pa.array(batch, pa.string()),
                                        "hashtag": pa.array([normalize(r) for r in batch], pa.string())}))
        con.execute("INSERT INTO raw_map SELECT * FROM batch")
        con.unregister("batch")
    con.execute("CREATE TABLE raw_counts AS SELECT hashtag, count(DISTINCT image_id) AS images FROM "
                "(SELECT image_id, unnest(t) AS raw FROM tags) JOIN raw_map USING (raw) "
                "WHERE hashtag <> '' GROUP BY hashtag")
    con.execute(f"CREATE VIEW vocab AS SELECT * FROM {_scan(vocab_dir / 'vocab.parquet')}")
    con.execute(f"CREATE VIEW top AS SELECT * FROM vocab ORDER BY images DESC, label LIMIT {cfg.top}")
    top = con.execute("SELECT label, name, key, hashtags, images FROM top").fetchall()
    merged = _counts(con, "SELECT hashtag, images FROM raw_counts WHERE hashtag IN (SELECT unnest(hashtags) FROM top)")
    labeled, samples = _scan(Path(cfg.labeled) / "labeled.parquet"), _scan(Path(cfg.samples) / "samples.parquet")
    split = "CASE WHEN tail THEN 'tail' ELSE 'head' END"
    per_split = con.execute(f"SELECT {split}, count(*), count(DISTINCT image_id) FROM {samples} GROUP BY 1").fetchall()
    rows = {name: con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0] for name, scan in
            [("manifest", _scan(m)), ("vocab", "vocab"), ("labeled", labeled), ("samples", samples)]}
    return {
        "raw": con.execute("SELECT images FROM raw_counts").fetchnumpy()["images"],
        "canonical": con.execute("SELECT images FROM vocab").fetchnumpy()["images"],
        "top": [{"label": r[0], "name": r[1], "key": r[2], "images": r[4],
                 "hashtags": sorted(((h, merged.get(h, 0)) for h in r[3]), key=lambda x: (-x[1], x[0]))} for r in top],
        "before": _counts(con, f"SELECT l, count(*) FROM (SELECT unnest(labels) AS l FROM {labeled}) GROUP BY l"),
        "after": _counts(con, f"SELECT l, count(*) FROM (SELECT unnest(labels) AS l FROM {samples}) GROUP BY l"),
        "head_tail": _counts(con, f"SELECT {split}, count(*) FROM {labeled} GROUP BY 1"),
        "samples": {s: n for s, n, _ in per_split}, "unique": {s: u for s, _, u in per_split}, "rows": rows}


def run(cfg: ReportConfig) -> dict:
    stats = {n: json.loads((Path(getattr(cfg, n)) / "stats.json").read_text()) for n in _INPUTS}
    ingest = Path(cfg.ingest_stats) if cfg.ingest_stats else Path(cfg.manifest).parent / "ingest_stats.json"
    alpha, t, notes = card.resolve_parameters(cfg.alpha, cfg.tail_threshold, stats["samples"], stats["labeled"])
    con = duckdb.connect(config={"threads": cfg.threads} if cfg.threads else {})
    a = aggregate(con, cfg)
    con.close()
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(cfg).items() if v is not None)
    inputs = [(n, str(Path(getattr(cfg, n)).resolve()), a["rows"][n]) for n in a["rows"]]
    ingest_stats = json.loads(ingest.read_text()) if ingest.is_file() else None
    inputs += [("ingest stats", str(ingest.resolve()), "")] if ingest_stats is not None else []
    dedup_stats = json.loads(Path(cfg.dedup_stats).read_text()) if cfg.dedup_stats else None
    inputs += [("dedup stats", str(Path(cfg.dedup_stats).resolve()), "")] if dedup_stats is not None else []
    data = card.CardData(
        title=f"Dataset card: {Path(cfg.manifest).name}", command=f"python -m jobs.report {flags}", inputs=inputs,
        stages=card.stage_counts(stats["vocab"], stats["labeled"], ingest_stats, dedup_stats), raw_counts=a["raw"],
        canonical_counts=a["canonical"], top_labels=a["top"], tail_threshold=t, alpha=alpha,
        head_tail_images={k: a["head_tail"].get(k, 0) for k in ("head", "tail")}, samples=a["samples"],
        unique=a["unique"], before=a["before"], after=a["after"], notes=notes)
    out, tag = Path(cfg.out), uuid.uuid4().hex[:12]
    tmp, old = out.parent / f".{out.name}.tmp-{tag}", out.parent / f".{out.name}.old-{tag}"
    tmp.mkdir(parents=True)
    try:
        summary = card.write_card(data, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # move the previous card aside, put the new one in place, then delete the old
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return {**summary, "raw_hashtags": len(a["raw"]), "labels": len(a["canonical"])}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ReportConfig, argv, __doc__.splitlines()[0])
    result = run(cfg)
    print(f"report: {result['raw_hashtags']} hashtags -> {result['labels']} labels; top label share "
          f"before/after resampling {result['shift']['top_share_ratio']:.2f} -> {cfg.out}/dataset_card.md")
    return result


if __name__ == "__main__":
    main()
