"""The caption matcher (pipeline/caption_match.py) against a plain Python regex, and the vocabulary
job on captions against the same job on `#words`.

    python -m bench.caption_match_bench [--captions 1000000] [--rows 1000000] [--baseline-captions 2000] \
        [--workdir build/bench] [--seed 0] [--zipf 1.1] [--min-count 2] [--no-vocab]

1. Matcher: --captions synthetic captions (pipeline/synthetic_captions.py: Zipf over WordNet noun
   entries plus noise words), matched in Arrow batches of 65,536 on one core: wall and CPU seconds
   (time.process_time), captions per CPU second; the automaton's build is its own row. Baseline:
   one compiled `re` alternation of every entry form, longest first, between word boundaries,
   after the matcher's normalization written with `re` (ASCII captions: the synthetic ones are),
   one caption at a time, on the first --baseline-captions captions (at ~200 captions/s, 1M
   would take hours); both must give the same entries on that sample. Target: >= 20x.
2. Vocabulary job: jobs/vocab.py run() in one local[2] session over --rows rows, once with
   --tags-from caption and once on the same captions with each mention written as a `#word`
   (the default --tags-from hashtags), each timed with its CPU (JVM, Python workers, driver:
   bench/pipeline_bench.CpuSampler); the manifests are cached under WORKDIR by their parameters.
   Each route runs --repeats times, the order alternating (the JVM's first job pays its JIT
   warm-up), and its fastest run counts; a caption run includes each Python worker's build of
   the matcher whenever the workers are new. Target: within 2x at 1M.

Writes WORKDIR/caption-match-<captions>-<rows>-s<seed>.json and returns the same dict.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.pipeline_bench import CpuSampler, machine_busy_seconds, own_seconds
from jobs.lib.config import parse_config
from pipeline.atomic import atomic_path
from pipeline.caption_match import build_matcher, lemma_entries, surface_forms
from pipeline.synthetic import numbered_strings
from pipeline.synthetic_captions import caption_batches, noise_words, ranked_entries
from pipeline.wordnet import DEFAULT_LEXNAMES, load_wordnet

MASTER = "local[2]"
BATCH = 65_536  # the Spark jobs' Arrow batch (jobs/lib/session.py JOB_DEFAULTS)


@dataclass(frozen=True)
class BenchConfig:
    captions: int = field(default=1_000_000, metadata={"help": "captions the matcher is timed on"})
    rows: int = field(default=1_000_000, metadata={"help": "manifest rows of the vocabulary job runs"})
    baseline_captions: int = field(default=2_000, metadata={"help": "captions the regex baseline is timed on"})
    workdir: str = field(default="build/bench", metadata={"help": "manifest cache and outputs"})
    seed: int = field(default=0, metadata={"help": "seed of the captions"})
    zipf: float = field(default=1.1, metadata={"help": "exponent s of p(rank) ~ rank^-s of the mentions"})
    min_count: int = field(default=2, metadata={"help": "vocab --min-count"})
    repeats: int = field(default=2, metadata={"help": "runs of each vocab route, in alternating order; the fastest counts"})
    vocab: bool = field(default=True, metadata={"help": "also time the vocabulary job (part 2)"})
    driver_memory: str = field(default="8g", metadata={"help": "spark.driver.memory"})

    def __post_init__(self):
        for name in ("captions", "rows", "baseline_captions", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.baseline_captions > self.captions:
            raise ValueError(f"--baseline-captions {self.baseline_captions} exceeds --captions {self.captions}")


def timed(fn):
    """(fn(), wall seconds, CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


class RegexBaseline:
    """The plain-Python matcher: the caption normalized with `re` as scan_text does it for ASCII,
    then one alternation of every form (single spaces between words), longest first."""

    def __init__(self, forms: dict[str, str]):
        self.forms = forms
        alternatives = sorted((f.replace("_", " ") for f in forms), key=lambda f: (-len(f), f))
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alternatives)) + r")(?!\w)")

    def match(self, caption: str | None) -> list[str]:
        text = unicodedata.normalize("NFKC", caption or "").lower()
        text = re.sub(r"[\t\n\v\f\r \-_]+", " ", text)
        text = re.sub(r"\W*[^\w ]\W*", "  ", text)  # punctuation ends a compound
        return sorted({self.forms[m.group(0).replace(" ", "_")] for m in self.pattern.finditer(text)})


def bench_matcher(cfg: BenchConfig, wn) -> dict:
    lexnames = tuple(DEFAULT_LEXNAMES)
    matcher, build_s, build_cpu = timed(lambda: build_matcher(wn, lexnames))
    entries = matcher.entries.to_pylist()
    ranked = ranked_entries(wn, entries, cfg.seed)
    batches = [text for text, _ in caption_batches(cfg.captions, ranked, noise_words(set(entries)), seed=cfg.seed,
                                                   zipf_s=cfg.zipf, batch_size=BATCH)]
    matched, wall, cpu = timed(lambda: [matcher.match(b) for b in batches])
    n_entries = sum(pc.sum(pc.list_value_length(m)).as_py() or 0 for m in matched)
    chars = sum(pc.sum(pc.utf8_length(b)).as_py() for b in batches)
    print(f"[bench] matcher: built in {build_s:.1f} s ({len(entries):,} entries, {len(matcher.pattern_entry):,} "
          f"forms); {cfg.captions:,} captions ({chars / cfg.captions:.0f} characters, {n_entries / cfg.captions:.2f} "
          f"entries each) in {wall:.2f} s wall, {cpu:.2f} s CPU: {cfg.captions / cpu:,.0f} captions/s per core",
          flush=True)
    sample = pa.concat_arrays(batches).slice(0, cfg.baseline_captions)
    baseline, compile_s, _ = timed(lambda: RegexBaseline(surface_forms(wn, entries)))
    got, base_wall, base_cpu = timed(lambda: [baseline.match(c) for c in sample.to_pylist()])
    same = got == matcher.match(sample).to_pylist()
    speedup = (cfg.captions / cpu) / (cfg.baseline_captions / base_cpu)
    print(f"[bench] regex baseline: compiled in {compile_s:.1f} s; {cfg.baseline_captions:,} captions in "
          f"{base_wall:.2f} s wall, {base_cpu:.2f} s CPU: {cfg.baseline_captions / base_cpu:,.0f} captions/s per core; "
          f"matcher/regex {speedup:,.0f}x (target >= 20x); same entries on the sample: {same}", flush=True)
    return {"entries": len(entries), "forms": len(matcher.pattern_entry), "build_s": build_s, "build_cpu_s": build_cpu,
            "captions": cfg.captions, "mean_characters": chars / cfg.captions,
            "mean_entries": n_entries / cfg.captions, "wall_s": wall, "cpu_s": cpu,
            "captions_per_cpu_s": cfg.captions / cpu,
            "baseline": {"captions": cfg.baseline_captions, "compile_s": compile_s, "wall_s": base_wall,
                         "cpu_s": base_cpu, "captions_per_cpu_s": cfg.baseline_captions / base_cpu},
            "speedup": speedup, "same_entries_on_sample": same}


def cached_manifests(cfg: BenchConfig, wn) -> dict[str, Path]:
    """The caption manifest and its `#words` twin (image_id, image, caption), written once per
    parameters, in row groups of BATCH rows."""
    stem = Path(cfg.workdir) / f"captions-{cfg.rows}-s{cfg.seed}-z{cfg.zipf}"
    paths = {"caption": stem.with_name(stem.name + "-text.parquet"),
             "hashtags": stem.with_name(stem.name + "-hashtags.parquet")}
    if all(p.is_file() for p in paths.values()):
        return paths
    stem.parent.mkdir(parents=True, exist_ok=True)
    entries = lemma_entries(wn, DEFAULT_LEXNAMES)
    ranked = ranked_entries(wn, entries, cfg.seed)
    schema = pa.schema([("image_id", pa.string()), ("image", pa.string()), ("caption", pa.string())])
    with atomic_path(paths["caption"]) as t1, atomic_path(paths["hashtags"]) as t2, \
            pq.ParquetWriter(t1, schema) as w1, pq.ParquetWriter(t2, schema) as w2:
        start = 0
        for text, tags in caption_batches(cfg.rows, ranked, noise_words(set(entries)), seed=cfg.seed,
                                          zipf_s=cfg.zipf, batch_size=BATCH):
            ids = [numbered_strings("cap", "", start, len(text)), numbered_strings("cap/", ".jpg", start, len(text))]
            w1.write_batch(pa.record_batch([*ids, text], schema=schema))
            w2.write_batch(pa.record_batch([*ids, tags], schema=schema))
            start += len(text)
    return paths


def bench_vocab(cfg: BenchConfig, manifests: dict[str, Path]) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from jobs.lib.session import get_session
    from jobs.vocab import VocabConfig, run as vocab

    spark = get_session("caption-bench", MASTER, {"spark.driver.memory": cfg.driver_memory, "spark.ui.enabled": "false",
                                                  "spark.ui.showConsoleProgress": "false"})
    spark.range(1).count()  # JVM start-up is no job's
    out = (Path(cfg.workdir) / f"caption-vocab-{cfg.rows}-s{cfg.seed}").resolve()
    cpu = CpuSampler()
    res, order = {}, ("hashtags", "caption")
    for route in (r for rep in range(cfg.repeats) for r in (order if rep % 2 == 0 else order[::-1])):
        spark.catalog.clearCache()
        vc = VocabConfig(manifest=str(manifests[route].resolve()), out=str(out / route), min_count=cfg.min_count,
                         tags_from=route)
        cpu0, busy0, own0, t0 = cpu.totals(), machine_busy_seconds(), own_seconds(), time.perf_counter()
        stats = vocab(spark, vc)
        wall, cpu1, busy1, own1 = time.perf_counter() - t0, cpu.totals(), machine_busy_seconds(), own_seconds()
        used = {f"{k}_cpu_s": cpu1[k] - cpu0[k] for k in cpu0}
        total = sum(used.values()) + own1 - own0
        run = {"wall_s": wall, **used, "driver_cpu_s": own1 - own0, "cpu_s": total,
               "others_cpu_s": max(0.0, busy1 - busy0 - total), "vocab_size": stats["vocab_size"],
               "distinct_hashtags": stats["distinct_hashtags"], "rows_kept": stats["rows_kept"]}
        res.setdefault(f"{route}_runs", []).append(run)
        if route not in res or wall < res[route]["wall_s"]:
            res[route] = run
        print(f"[bench] vocab --tags-from {route}: {wall:.1f} s wall, {total:.1f} s CPU (JVM {used['jvm_cpu_s']:.1f}, "
              f"Python workers {used['python_cpu_s']:.1f}, driver {own1 - own0:.1f}; other processes "
              f"{run['others_cpu_s']:.1f}); {stats['vocab_size']:,} labels from "
              f"{stats['distinct_hashtags']:,} hashtags, {stats['rows_kept']:,} rows kept", flush=True)
    cpu.close()
    spark.stop()
    keys = [{r["key"] for r in pq.read_table(out / route / "vocab.parquet", columns=["key"]).to_pylist()}
            for route in ("hashtags", "caption")]
    res["ratio_wall"] = res["caption"]["wall_s"] / res["hashtags"]["wall_s"]
    res["ratio_cpu"] = res["caption"]["cpu_s"] / res["hashtags"]["cpu_s"]
    res["label_keys_jaccard"] = len(keys[0] & keys[1]) / max(1, len(keys[0] | keys[1]))
    print(f"[bench] vocab caption/#words (fastest runs): {res['ratio_wall']:.2f}x wall, {res['ratio_cpu']:.2f}x CPU "
          f"(target within 2x); "
          f"label keys shared (Jaccard): {res['label_keys_jaccard']:.3f}", flush=True)
    return res


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(BenchConfig, argv, __doc__.splitlines()[0])
    load = os.getloadavg()
    print(f"[bench] {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    wn = load_wordnet()
    result = {"config": asdict(cfg), "machine": {"cpus": os.cpu_count(), "load_before": load},
              "matcher": bench_matcher(cfg, wn)}
    if cfg.vocab:
        result["vocab"] = bench_vocab(cfg, cached_manifests(cfg, wn))
    result["machine"]["load_after"] = os.getloadavg()
    path = Path(cfg.workdir) / f"caption-match-{cfg.captions}-{cfg.rows}-s{cfg.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"[bench] results -> {path}; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not result["matcher"]["same_entries_on_sample"]:
        raise SystemExit("[bench] the matcher and the regex baseline disagree: the timings compare different work")
    return result


if __name__ == "__main__":
    main()
