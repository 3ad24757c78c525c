"""Dataset card: SWAG Figure 1, label frequency before/after resampling, head/tail splits, drops.

    python -m jobs.dataset_card --manifest build/demo/manifest.parquet --vocab build/demo/vocab \
        --labeled build/demo/labeled --samples build/demo/samples --out build/demo/card \
        [--alpha A] [--tail-threshold T] [--top 20] [--threads N]

Plain Python, no Spark: DuckDB aggregates the Parquet outputs (bounded memory, spills to disk),
pipeline/dataset_card.py draws. Hashtag counts come from the vocab job's image_hashtags.parquet
(normalized once, there), so the card cannot drift from the vocabulary; the vocabulary's size
must equal the class count labeled.parquet and samples.parquet record. --alpha and
--tail-threshold default to the values the samples and labeled stages were run with. Writes OUT/dataset_card.md and OUT/*.png, atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

import schemas
from jobs.lib.config import parse_config
from pipeline import dataset_card as card
from pipeline.atomic import atomic_dir

_INPUTS = {"vocab": ("vocab.parquet", "hashtag_map.parquet", "image_hashtags.parquet", "stats.json"),
           "labeled": ("labeled.parquet", "stats.json"), "samples": ("samples.parquet", "stats.json")}


@dataclass(frozen=True)
class DatasetCardConfig:
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


def aggregate(con, cfg: DatasetCardConfig) -> dict:
    m, vocab_dir = Path(cfg.manifest), Path(cfg.vocab)
    # images per normalized hashtag, counted over the vocab job's own table: nothing is normalized here
    con.execute("CREATE TABLE raw_counts AS SELECT hashtag, count(*) AS images FROM (SELECT unnest(hashtags) "
                f"AS hashtag FROM {_scan(vocab_dir / 'image_hashtags.parquet')}) GROUP BY hashtag")
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


def check_class_counts(cfg: DatasetCardConfig) -> int:
    """C, when the vocabulary's size and the class count recorded in labeled.parquet and
    samples.parquet agree; a ValueError naming the two that disagree otherwise."""
    vocab = Path(cfg.vocab) / "vocab.parquet"
    n = pq.ParquetDataset(vocab).read(columns=["label"]).num_rows
    for path in (Path(cfg.labeled) / "labeled.parquet", Path(cfg.samples) / "samples.parquet"):
        c, source = schemas.class_count_of(path)
        if c != n:
            raise ValueError(f"{path} records {c} classes (from the vocabulary {source}) but the vocabulary "
                             f"{vocab} has {n} labels: they are not outputs of one pipeline run")
    return n


def run(cfg: DatasetCardConfig) -> dict:
    stats = {n: json.loads((Path(getattr(cfg, n)) / "stats.json").read_text()) for n in _INPUTS}
    ingest = Path(cfg.ingest_stats) if cfg.ingest_stats else Path(cfg.manifest).parent / "ingest_stats.json"
    alpha, t, notes = card.resolve_parameters(cfg.alpha, cfg.tail_threshold, stats["samples"], stats["labeled"])
    check_class_counts(cfg)
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
        title=f"Dataset card: {Path(cfg.manifest).name}", command=f"python -m jobs.dataset_card {flags}", inputs=inputs,
        stages=card.stage_counts(stats["vocab"], stats["labeled"], ingest_stats, dedup_stats), raw_counts=a["raw"],
        canonical_counts=a["canonical"], top_labels=a["top"], tail_threshold=t, alpha=alpha,
        head_tail_images={k: a["head_tail"].get(k, 0) for k in ("head", "tail")}, samples=a["samples"],
        unique=a["unique"], before=a["before"], after=a["after"], notes=notes,
        balancing=stats["samples"].get("metaclip"))
    with atomic_dir(cfg.out) as tmp:
        summary = card.write_card(data, tmp)
    return {**summary, "raw_hashtags": len(a["raw"]), "labels": len(a["canonical"])}


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(DatasetCardConfig, argv, __doc__.splitlines()[0])
    result = run(cfg)
    print(f"dataset card: {result['raw_hashtags']} hashtags -> {result['labels']} labels; top label share "
          f"before/after resampling {result['shift']['top_share_ratio']:.2f} -> {cfg.out}/dataset_card.md")
    return result


if __name__ == "__main__":
    main()
