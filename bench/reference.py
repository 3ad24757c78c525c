"""Single-process reference of the vocab -> label -> resample chain: DuckDB, pyarrow, numpy.

Same inputs, same outputs (Parquet files) and the same definitions as jobs/vocab.py,
jobs/label.py and jobs/resample.py, so a benchmark can put the two side by side:
Python runs once per distinct raw string (`normalize`) and once per distinct frequent
hashtag (`get_synsets`); row-scale work is SQL. Two deliberate differences, both outside what
the checks compare: of rows sharing an image_id the one kept is chosen by DuckDB's hash, not
Spark's xxhash64 (the synthetic manifest has unique ids), and the resample is one seeded
multinomial per split plus a permutation instead of the jobs' bucketed two-level draw (same
distribution, same work per row, not the same draw).
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from pipeline.normalize import normalize
from pipeline.sampling import HEAD, TAIL, fixed_point, multinomial, split_sizes
from pipeline.wordnet import get_synsets, load_wordnet


def connect(threads: int, memory_limit: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    _sql(con, f"SET threads = {int(threads)}")
    _sql(con, f"SET memory_limit = '{memory_limit}'")
    _sql(con, "SET preserve_insertion_order = false")  # as Spark: row order is not part of the result
    return con


def _sql(con, sql: str) -> list[tuple]:
    """Run `sql` to completion (DuckDB keeps a connection busy until a result is fetched)."""
    return con.execute(sql).fetchall()


def _quote(path: str | os.PathLike) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _clean_manifest(con, manifest: str, name: str, columns: str) -> int:
    """Temp table `name` of the kept manifest rows (`columns` of them plus `_tags`, the non-empty
    raw hashtags) with jobs/lib/manifest.clean_manifest's rules; returns its row count.

    Deduplicating by image_id takes a window sort; it runs only when ids repeat, which a
    hash count finds in a fraction of the time."""
    valid = f"""
        SELECT {columns}, _tags FROM (
            SELECT *, list_filter(coalesce(hashtags, []::VARCHAR[]), lambda t: t IS NOT NULL AND length(t) > 0) AS _tags
            FROM read_parquet({_quote(manifest)}))
        WHERE image_id IS NOT NULL AND image_id <> '' AND image IS NOT NULL AND image <> '' AND len(_tags) > 0"""
    _sql(con, f"CREATE OR REPLACE TEMP TABLE {name} AS {valid}")
    n, ids = _sql(con, f"SELECT count(*), count(DISTINCT image_id) FROM {name}")[0]
    if n != ids:
        _sql(con, f"""CREATE OR REPLACE TEMP TABLE {name} AS {valid}
            QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY hash(image, hashtags)) = 1""")
        n = ids
    return n


def _raw_map(con, table: str) -> pa.Table:
    """(raw, hashtag) for every distinct raw string of `table`'s `_tags`: Python per distinct string."""
    raws = con.sql(f"SELECT DISTINCT unnest(_tags) AS raw FROM {table}").to_arrow_table().column("raw").to_pylist()
    return pa.table({"raw": pa.array(raws, pa.string()),
                     "hashtag": pa.array([normalize(r) for r in raws], pa.string())})


def vocab(con, manifest: str, out: str | os.PathLike, min_count: int, lexnames: tuple[str, ...],
          wordnet: str | None = None) -> dict:
    """OUT/vocab.parquet, OUT/hashtag_map.parquet and OUT/image_hashtags.parquet as jobs/vocab.py
    writes them."""
    wn = load_wordnet(wordnet)
    rows_kept = _clean_manifest(con, manifest, "clean", "image_id")
    raw_map = _raw_map(con, "clean")
    con.register("raw_map", raw_map)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _sql(con, """
        CREATE OR REPLACE TEMP TABLE image_tags AS
        SELECT image_id, coalesce(list_sort(list(DISTINCT hashtag) FILTER (WHERE hashtag <> '')), []::VARCHAR[])
               AS hashtags
        FROM (SELECT image_id, unnest(_tags) AS raw FROM clean) JOIN raw_map USING (raw) GROUP BY image_id""")
    _sql(con, "DROP TABLE clean")
    _sql(con, f"COPY image_tags TO {_quote(out / 'image_hashtags.parquet')} (FORMAT parquet)")
    _sql(con, "CREATE OR REPLACE TEMP TABLE img_tags AS SELECT image_id, unnest(hashtags) AS hashtag FROM image_tags")
    _sql(con, "DROP TABLE image_tags")
    counts = dict(_sql(con, "SELECT hashtag, count(*) FROM img_tags GROUP BY hashtag"))
    frequent = {h: n for h, n in counts.items() if n >= min_count}
    synsets = {h: get_synsets(h, wn, lexnames) for h in frequent}
    keyed = {h: "+".join(sorted(s)) for h, s in synsets.items() if s}
    con.register("keyed", pa.table({"hashtag": pa.array(list(keyed), pa.string()),
                                    "key": pa.array(list(keyed.values()), pa.string())}))
    label_images = dict(_sql(con, """
        SELECT key, count(*) FROM (SELECT DISTINCT image_id, key FROM img_tags JOIN keyed USING (hashtag))
        GROUP BY key"""))
    _sql(con, "DROP TABLE img_tags")
    groups: dict[str, list[str]] = {}
    for h, k in keyed.items():
        groups.setdefault(k, []).append(h)
    order = sorted(groups, key=lambda k: (-label_images[k], k))
    rows = [{"label": i, "name": min(groups[k], key=lambda h: (-frequent[h], h)), "key": k,
             "synsets": sorted(synsets[groups[k][0]]), "hashtags": sorted(groups[k]), "images": label_images[k]}
            for i, k in enumerate(order)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.VOCAB), out / "vocab.parquet")
    hmap = sorted((h, r["label"]) for r in rows for h in r["hashtags"])
    pq.write_table(pa.table({"hashtag": [h for h, _ in hmap], "label": [lab for _, lab in hmap]},
                            schema=schemas.HASHTAG_MAP), out / "hashtag_map.parquet")
    con.unregister("raw_map")
    con.unregister("keyed")
    return {"rows_kept": rows_kept, "distinct_raw_strings": raw_map.num_rows, "distinct_hashtags": len(counts),
            "get_synsets_calls": len(synsets), "hashtags_kept": len(keyed), "vocab_size": len(rows)}


def label(con, manifest: str, vocab_dir: str | os.PathLike, out: str | os.PathLike, tail_threshold: int) -> dict:
    """OUT/labeled.parquet as jobs/label.py writes it (same columns, same order): hashtags from the
    vocabulary's image_hashtags.parquet, the other columns from the manifest's kept rows."""
    vocab_t = pq.read_table(Path(vocab_dir) / "vocab.parquet", columns=["label", "images"])
    hmap = pq.read_table(Path(vocab_dir) / "hashtag_map.parquet")
    rows_kept = _clean_manifest(con, manifest, "clean", "image_id, image, hashtags")
    con.register("hmap", hmap)
    con.register("label_images", vocab_t)
    # hashtag -> (label, f(label)): a small table, joined once per (image, hashtag)
    tag_label = con.sql("SELECT hashtag, label, images FROM hmap JOIN label_images USING (label)").to_arrow_table()
    con.register("tag_label", tag_label)
    _sql(con, f"""
        CREATE OR REPLACE TEMP TABLE labeled AS
        WITH scored AS (
            SELECT image_id, list_sort(list(DISTINCT label)) AS labels, min(images) AS min_f
            FROM (SELECT image_id, unnest(hashtags) AS hashtag
                  FROM read_parquet({_quote(Path(vocab_dir) / 'image_hashtags.parquet')}))
            JOIN tag_label USING (hashtag) GROUP BY image_id)
        SELECT c.image_id, c.image, s.labels, pow(s.min_f::DOUBLE, -0.5) AS importance,
               s.min_f < {int(tail_threshold)} AS tail, c.hashtags
        FROM clean c JOIN scored s USING (image_id)""")
    _sql(con, "DROP TABLE clean")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _sql(con, f"COPY labeled TO {_quote(out / 'labeled.parquet')} (FORMAT parquet)")
    n, tails = _sql(con, "SELECT count(*), coalesce(sum(tail::INT), 0) FROM labeled")[0]
    hist = dict(_sql(con, "SELECT len(labels), count(*) FROM labeled GROUP BY 1 ORDER BY 1"))
    _sql(con, "DROP TABLE labeled")
    for name in ("hmap", "label_images", "tag_label"):
        con.unregister(name)
    return {"rows_kept": n, "no_label": rows_kept - n, "head_images": n - tails, "tail_images": tails,
            "labels_per_image": hist}


def resample(labeled_dir: str | os.PathLike, out: str | os.PathLike, samples: int, alpha: float, seed: int) -> dict:
    """OUT/samples.parquet (position-ordered): round(alpha*M) head draws and the rest tail draws,
    with replacement, p proportional to importance within each split, then a seeded shuffle."""
    t = pq.read_table(Path(labeled_dir) / "labeled.parquet", columns=["image_id", "image", "labels", "tail", "importance"])
    tail = t.column("tail").to_numpy()
    imp = t.column("importance").to_numpy()
    rng = np.random.default_rng(seed)
    counts = np.zeros(t.num_rows, dtype=np.int64)
    stats = {}
    for split, n in split_sizes(samples, alpha).items():
        idx = np.flatnonzero(tail if split == TAIL else ~tail)
        if n and not len(idx):
            raise ValueError(f"{n} samples requested from the empty {split} split")
        if n:
            w = imp[idx]
            counts[idx] = multinomial(n, fixed_point(w / w.max()), rng)
        stats[split] = {"samples": int(counts[idx].sum()), "unique_images": int(np.count_nonzero(counts[idx]))}
    rows = np.repeat(np.arange(t.num_rows), counts)
    order = rows[rng.permutation(len(rows))]
    picked = t.select(["image_id", "image", "labels", "tail"]).take(pa.array(order))
    picked = picked.add_column(0, "position", pa.array(np.arange(len(order), dtype=np.int64)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(picked, out / "samples.parquet")
    assert stats[HEAD]["samples"] + stats[TAIL]["samples"] == samples
    return {"labeled_images": t.num_rows, "samples": samples, "splits": stats}
