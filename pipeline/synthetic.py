"""Synthetic hashtag manifests for scale work and benchmarks.

The tag universe mixes real WordNet 3.0 noun lemmas written as hashtags (`brown_bear` ->
`brownbear`), mostly from the lexicographer files SWAG keeps so most of them canonicalize,
with tags WordNet cannot place: common Instagram tags, place names and misspelled lemmas.
Its order is the Zipf rank. Images get i.i.d. tags with p(rank r) proportional to r^-s over
the universe, so duplicates within one image happen (as in real captions) and the head tag
appears with probability ~ n_tags_per_image * p(1). Tags per image follow a geometric law
truncated to 1..MAX_TAGS: P(k) proportional to TAGS_PER_IMAGE_DECAY^(k-1) (mean ~3.8).

    python -m pipeline.synthetic images=10000000 out=build/synthetic/manifest.parquet [seed=0 zipf=1.1 ...]

The Parquet file is written in row groups of `batch_size` rows, so memory does not grow with
the number of images, and the same parameters give byte-identical output.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.cli import key, load_config
from pipeline.wordnet import DEFAULT_LEXNAMES
from schemas import MANIFEST

MAX_TAGS = 10
TAGS_PER_IMAGE_DECAY = 0.8
DEFAULT_TAGS = 20_000
DEFAULT_BATCH = 262_144
MAX_BATCH = 4_194_304   # keeps the int32 string offsets of one batch far below 2^31
ID_DIGITS = 10          # image_id syn%010d
MAX_LEMMA_WORDS = 2     # get_synsets splits a hashtag once, so longer lemmas cannot canonicalize

# The most used Instagram tags. Most name no synset in SWAG's lexnames; a few (art, fashion,
# nature, style, travel) do, as their real counterparts do.
COMMON_TAGS: tuple[str, ...] = (
    "love", "instagood", "photooftheday", "nofilter", "tbt", "fashion", "beautiful", "happy",
    "cute", "me", "selfie", "picoftheday", "follow", "instadaily", "friends", "summer", "fun",
    "smile", "style", "repost", "igers", "like4like", "followme", "tagsforlikes", "instalike",
    "photography", "nature", "travel", "art", "family", "life", "amazing", "bestoftheday",
    "instamood", "throwbackthursday", "motivation", "goodvibes", "weekend", "ootd", "regram",
)
# Shares of the universe after the common tags; the rest of the kinds interleave evenly.
# WordNet's ~29.6k short canonical lemmas cap n_tags at about 42,000.
KIND_SHARES: dict[str, float] = {"wordnet": 0.70, "misspelling": 0.14, "other": 0.10, "place": 0.06}
COMMON_STRIDE = 3  # common tags take ranks 0, 3, 6, ...: they lead real hashtag rankings
POLYSEMY_POWER = 3  # lemma order weight = polysemy^3: enough for `head`, `play` to lead


@dataclass(frozen=True)
class LemmaPools:
    """Noun lemmas as hashtags, each with its polysemy (noun synsets it names) as weight."""
    wordnet: dict[str, int]   # lowercase lemmas of synsets in SWAG's lexnames
    place: dict[str, int]     # capitalized noun.location lemmas: newyork, paris
    other: dict[str, int]     # lowercase lemmas of no synset in SWAG's lexnames
    known: frozenset[str]     # every noun lemma as a hashtag: misspellings must avoid these


def as_hashtag(lemma: str) -> str:
    """A WordNet lemma written as a hashtag: lowercase, '_' and spaces removed."""
    return lemma.replace("_", "").replace(" ", "").lower()


def lemma_pools(wn, lexnames: Sequence[str] = DEFAULT_LEXNAMES) -> LemmaPools:
    """One pass over WordNet's noun synsets (a few seconds on the full corpus)."""
    keep = set(lexnames)
    poly: dict[str, int] = {}
    canon, place, other = set(), set(), set()
    for s in wn.all_synsets("n"):
        lex = s.lexname()
        for lemma in s.lemma_names():
            tag = as_hashtag(lemma)
            poly[tag] = poly.get(tag, 0) + 1
            if not (tag.isascii() and tag.isalpha() and len(tag) >= 3) or lemma.count("_") >= MAX_LEMMA_WORDS:
                continue
            if lemma.islower():
                (canon if lex in keep else other).add(tag)
            elif lex == "noun.location" and lemma[0].isupper():
                place.add(tag)
    place -= canon
    other -= canon | place
    return LemmaPools(wordnet={t: poly[t] for t in sorted(canon)}, place={t: poly[t] for t in sorted(place)},
                      other={t: poly[t] for t in sorted(other)}, known=frozenset(poly))


def weighted_order(pool: dict[str, int], rng: np.random.Generator) -> list[str]:
    """A seeded weighted shuffle (Gumbel top-k) with weight polysemy^POLYSEMY_POWER: polysemy
    stands in for frequency, so `head` and `play` tend to lead and `sphyrna` to trail."""
    tags = list(pool)
    weights = np.array([pool[t] for t in tags], dtype=np.float64)
    keys = POLYSEMY_POWER * np.log(weights) + rng.gumbel(size=len(tags))
    return [tags[i] for i in np.argsort(-keys, kind="stable")]


def _misspell(tag: str, rng: np.random.Generator) -> str:
    """Drop, swap (with the next) or double one character."""
    op, i = int(rng.integers(3)), int(rng.integers(len(tag) - 1))
    if op == 0:
        return tag[:i] + tag[i + 1:]
    if op == 1:
        return tag[:i] + tag[i + 1] + tag[i] + tag[i + 2:]
    return tag[:i + 1] + tag[i] + tag[i + 1:]


def _misspellings(sources: list[str], n: int, taken: set[str], rng: np.random.Generator) -> list[str]:
    """n misspellings of `sources` (in a seeded order, cycling) that are no lemma and not taken."""
    sources = [sources[i] for i in rng.permutation(len(sources)) if len(sources[i]) >= 4]
    out: list[str] = []
    for attempt in range(20 * n + 100):
        if len(out) == n:
            return out
        if not sources:
            break
        bad = _misspell(sources[attempt % len(sources)], rng)
        if bad not in taken:
            taken.add(bad)
            out.append(bad)
    if len(out) < n:
        raise ValueError(f"could only make {len(out)} of {n} distinct misspellings: lower n_tags")
    return out


def _kind_counts(n_tags: int) -> dict[str, int]:
    """How many tags of each kind a universe of n_tags holds (largest remainder rounding)."""
    n_common = min(len(COMMON_TAGS), n_tags // COMMON_STRIDE)
    rest = n_tags - n_common
    exact = {k: rest * f for k, f in KIND_SHARES.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: rest - sum(counts.values())]:
        counts[k] += 1
    return {"common": n_common, **counts}


def ranked_universe(pools: LemmaPools, n_tags: int, seed: int) -> list[tuple[str, str]]:
    """(hashtag, kind) pairs in Zipf rank order; the same pools, n_tags and seed give the same
    list. Kinds: common, wordnet, misspelling, other, place (shares in KIND_SHARES)."""
    if n_tags < 1:
        raise ValueError(f"n_tags must be >= 1, got {n_tags}")
    counts = _kind_counts(n_tags)
    rngs = dict(zip(["common", "wordnet", "place", "other", "misspelling"],
                    (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))))
    taken = set(pools.known)
    by_kind = {"common": [COMMON_TAGS[i] for i in rngs["common"].permutation(len(COMMON_TAGS))][: counts["common"]]}
    taken.update(by_kind["common"])
    for kind in ("wordnet", "place", "other"):
        pool = {t: w for t, w in getattr(pools, kind).items() if t not in by_kind["common"]}
        if len(pool) < counts[kind]:
            raise ValueError(f"n_tags={n_tags} needs {counts[kind]} {kind} lemmas but WordNet gives "
                             f"{len(pool)}: use n_tags <= about {int(len(pool) / KIND_SHARES[kind]) + counts['common']}")
        by_kind[kind] = weighted_order(pool, rngs[kind])[: counts[kind]]
    by_kind["misspelling"] = _misspellings(by_kind["wordnet"], counts["misspelling"], taken,
                                           rngs["misspelling"])
    # Interleave evenly: the i-th of n_k tags of a kind sits at fraction (i + 0.5) / n_k ...
    kinds = list(KIND_SHARES)
    slots = sorted(((i + 0.5) / len(by_kind[k]), j, i) for j, k in enumerate(kinds) for i in range(len(by_kind[k])))
    rest = iter([(by_kind[kinds[j]][i], kinds[j]) for _, j, i in slots])
    # ... and common tags take ranks 0, COMMON_STRIDE, 2 * COMMON_STRIDE, ...
    out: list[tuple[str, str]] = []
    for t in by_kind["common"]:
        out.append((t, "common"))
        out.extend(itertools.islice(rest, COMMON_STRIDE - 1))
    out.extend(rest)
    return out


def tag_universe(wn, n_tags: int = DEFAULT_TAGS, seed: int = 0) -> list[str]:
    """The ranked hashtag universe: index i is Zipf rank i + 1."""
    return [t for t, _ in ranked_universe(lemma_pools(wn), n_tags, seed)]


def tags_per_image_pmf() -> np.ndarray:
    """P(k tags) for k = 1..MAX_TAGS (index k - 1): truncated geometric."""
    p = TAGS_PER_IMAGE_DECAY ** np.arange(MAX_TAGS, dtype=np.float64)
    return p / p.sum()


def zipf_cdf(n: int, s: float) -> np.ndarray:
    """Cumulative P(rank <= r) for p(r) proportional to r^-s, r = 1..n; the last entry is 1."""
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -s)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def numbered_strings(prefix: str, suffix: str, start: int, n: int, width: int = ID_DIGITS) -> pa.Array:
    """prefix + zero-padded (start..start+n-1) + suffix as a pyarrow string array, built from
    fixed-width bytes (one numpy op per digit, no per-row Python)."""
    pre, suf = prefix.encode(), suffix.encode()
    size = len(pre) + width + len(suf)
    nums = np.arange(start, start + n, dtype=np.int64)
    buf = np.empty((n, size), dtype=np.uint8)
    buf[:, :len(pre)] = np.frombuffer(pre, np.uint8)
    for k in range(width):
        buf[:, len(pre) + width - 1 - k] = nums // 10 ** k % 10 + ord("0")
    buf[:, len(pre) + width:] = np.frombuffer(suf, np.uint8)
    offsets = np.arange(0, (n + 1) * size, size, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)])


def check_params(n_images: int, zipf_s: float, n_tags: int, batch_size: int) -> None:
    """ValueError naming the first parameter out of range."""
    if not 0 < n_images <= 10 ** ID_DIGITS:
        raise ValueError(f"n_images must be in 1..{10 ** ID_DIGITS}, got {n_images}")
    if not (math.isfinite(zipf_s) and zipf_s >= 0):
        raise ValueError(f"zipf exponent must be finite and >= 0, got {zipf_s}")
    if n_tags < 1:
        raise ValueError(f"n_tags must be >= 1, got {n_tags}")
    if not 0 < batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be in 1..{MAX_BATCH}, got {batch_size}")


def write_manifest(path: str | os.PathLike, n_images: int, tags: Sequence[str], *, seed: int = 0,
                   zipf_s: float = 1.1, batch_size: int = DEFAULT_BATCH, meta: dict | None = None) -> dict:
    """Write n_images rows of schemas.MANIFEST to `path`, tags drawn from the ranked `tags`.

    One row group per batch; rows are image_id `syn%010d`, image `syn/%010d.jpg` and the
    hashtags. The file appears by rename, then `<path>.json` with the parameters, `meta` and
    counts; both are byte-identical for the same arguments. Returns the sidecar's dict.
    """
    check_params(n_images, zipf_s, len(tags), batch_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tag_cdf, count_cdf = zipf_cdf(len(tags), zipf_s), np.cumsum(tags_per_image_pmf())
    count_cdf[-1] = 1.0
    dictionary = pa.array(tags, pa.string())
    used = np.zeros(len(tags), dtype=np.int64)
    per_image = np.zeros(MAX_TAGS + 1, dtype=np.int64)
    row_groups = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, MANIFEST, compression="zstd") as writer:
            for start in range(0, n_images, batch_size):
                n = min(batch_size, n_images - start)
                counts = 1 + np.searchsorted(count_cdf, rng.random(n), side="right")
                offsets = np.zeros(n + 1, dtype=np.int32)
                np.cumsum(counts, out=offsets[1:])
                ranks = np.searchsorted(tag_cdf, rng.random(int(offsets[-1])), side="right").astype(np.int32)
                used += np.bincount(ranks, minlength=len(tags))
                per_image += np.bincount(counts, minlength=MAX_TAGS + 1)
                hashtags = pa.ListArray.from_arrays(pa.array(offsets), dictionary.take(pa.array(ranks)))
                batch = pa.record_batch([numbered_strings("syn", "", start, n),
                                         numbered_strings("syn/", ".jpg", start, n), hashtags], schema=MANIFEST)
                writer.write_batch(batch, row_group_size=n)
                row_groups += 1
    top = np.argsort(-used, kind="stable")[:10]
    stats = {
        "params": {"n_images": n_images, "seed": seed, "zipf_s": zipf_s, "n_tags": len(tags),
                   "batch_size": batch_size, "max_tags": MAX_TAGS, "tags_per_image_decay": TAGS_PER_IMAGE_DECAY},
        "meta": meta or {},
        "row_groups": row_groups,
        "hashtags_total": int(used.sum()),
        "distinct_tags_used": int((used > 0).sum()),
        "tags_per_image": per_image[1:].tolist(),  # images with 1, 2, ..., MAX_TAGS tags
        "top_tags": [[tags[i], int(used[i])] for i in top],
    }
    side = path.with_name(path.name + ".json")
    write_text_atomic(side, json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


def write_synthetic_manifest(path: str | os.PathLike, n_images: int, wn, seed: int = 0, zipf_s: float = 1.1,
                             n_tags: int = DEFAULT_TAGS, batch_size: int = DEFAULT_BATCH) -> dict:
    """A synthetic manifest over `tag_universe(wn, n_tags, seed)`; see `write_manifest`."""
    check_params(n_images, zipf_s, n_tags, batch_size)
    ranked = ranked_universe(lemma_pools(wn), n_tags, seed)
    kinds: dict[str, int] = {}
    for _, kind in ranked:
        kinds[kind] = kinds.get(kind, 0) + 1
    return write_manifest(path, n_images, [t for t, _ in ranked], seed=seed, zipf_s=zipf_s,
                          batch_size=batch_size, meta={"universe_kinds": kinds})


@dataclass(frozen=True)
class SyntheticConfig:
    images: int = key(help="images (rows) in the manifest")
    out: str = key(help="Parquet file; <out>.json gets parameters and counts")
    seed: int = key(0, "seed of the tag universe and of every draw")
    zipf: float = key(1.1, "exponent s of p(rank) ~ rank^-s")
    tags: int = key(DEFAULT_TAGS, "size of the tag universe")
    batch_size: int = key(DEFAULT_BATCH, "rows per row group")
    wordnet: str | None = key(None, "NLTK wordnet corpus directory; null: pipeline.wordnet's default")

    def __post_init__(self):
        if not self.out:
            raise ValueError("out must name a Parquet file")
        check_params(self.images, self.zipf, self.tags, self.batch_size)


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(SyntheticConfig, argv, "pipeline.synthetic", __doc__)
    from pipeline.wordnet import load_wordnet

    t0 = time.perf_counter()
    stats = write_synthetic_manifest(cfg.out, cfg.images, load_wordnet(cfg.wordnet), seed=cfg.seed,
                                     zipf_s=cfg.zipf, n_tags=cfg.tags, batch_size=cfg.batch_size)
    print(f"[synthetic] {cfg.images} images, {stats['hashtags_total']} hashtags, "
          f"{stats['distinct_tags_used']}/{cfg.tags} tags used, {stats['row_groups']} row groups "
          f"-> {cfg.out} in {time.perf_counter() - t0:.1f}s; config {json.dumps(asdict(cfg))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
