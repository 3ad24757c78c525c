"""A synthetic web corpus with real JPEG bytes, laid out as img2dataset's `webdataset` output.

    python -m pipeline.synthetic_corpus out=DIR images=N [seed=0] [shard_size=1000] [failed=0.02] \
        [side=96] [workers=1] [zipf=1.1] [tags=20000] [wordnet=DIR]

What img2dataset writes for a URL list with `--output_format webdataset`: per shard s,
DIR/{s:05d}.tar with `<key>.jpg`, `<key>.txt` (the caption) and `<key>.json` for each successful
row; DIR/{s:05d}.parquet with one row per input row of the shard (failed rows only there); and
DIR/{s:05d}_stats.json, written last (a rerun skips a shard that has it). Keys are img2dataset's:
9 digits, the shard number then the index within the shard (shard_size 1000: `000001012`).

Row i (0-based over the whole corpus) depends only on (seed, i): its status, its caption (a
template and hashtags drawn i.i.d. from pipeline/synthetic.py's ranked tag universe with
p(rank r) ~ r^-zipf, as many as its tags-per-image law says) and its image (a gradient, noise and
a few shapes drawn with numpy/Pillow, side x side, JPEG quality 90, about 3-8 KB). So any shard
can be regenerated alone, and tars (fixed mtime, owner and mode), Parquet and stats are
byte-identical from run to run. img2dataset's stats carry timings; these do not, so that they
are byte-identical too.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.cli import key, load_config
from pipeline.synthetic import DEFAULT_TAGS, tags_per_image_pmf, zipf_cdf

SUCCESS, FAILED_DOWNLOAD, FAILED_RESIZE = "success", "failed_to_download", "failed_to_resize"
STATUSES = (SUCCESS, FAILED_DOWNLOAD, FAILED_RESIZE)
RESIZE_SHARE = 0.1  # of failed rows: img2dataset's resize failures are rare next to download ones
DOWNLOAD_ERRORS = ("HTTP Error 404: Not Found", "HTTP Error 403: Forbidden",
                   "<urlopen error [Errno -2] Name or service not known>", "The read operation timed out")
RESIZE_ERRORS = ("cannot identify image file", "image file is truncated")
TEMPLATES = ("a photo of a {}", "my {} today", "look at this {}", "{} on the weekend", "the best {} ever")
KEY_DIGITS = 9
QUALITY = 90
LOW_FREQ = 8  # the 8 x 8 lowest 2-D cosine frequencies (a 64-bit perceptual hash's)
GENERATOR = 2  # bumped when the bytes of a row change: cached corpora of another version are redone
MTIME = 1_600_000_000  # every tar member's mtime: byte-identical tars
# One row of DIR/NNNNN.parquet: img2dataset's columns (its order), one row per input row.
CORPUS_PARQUET = pa.schema([
    pa.field("key", pa.string()), pa.field("status", pa.string()), pa.field("error_message", pa.string()),
    pa.field("caption", pa.string()), pa.field("url", pa.string()), pa.field("width", pa.int64()),
    pa.field("height", pa.int64()), pa.field("original_width", pa.int64()),
    pa.field("original_height", pa.int64()), pa.field("sha256", pa.string()), pa.field("uid", pa.string()),
])


@dataclass(frozen=True)
class CorpusParams:
    """What determines the corpus bytes; written into each shard's stats."""
    images: int
    seed: int = 0
    shard_size: int = 1000
    failed: float = 0.02
    side: int = 96
    zipf: float = 1.1

    def __post_init__(self):
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")
        if not 1 <= self.shard_size < 10 ** 4:
            raise ValueError(f"shard_size must be in 1..9999 (4 digits of the key), got {self.shard_size}")
        if self.n_shards > 10 ** (KEY_DIGITS - self.index_digits):
            raise ValueError(f"{self.n_shards} shards do not fit the key's {KEY_DIGITS - self.index_digits} "
                             "shard digits: raise shard_size")
        if not 0 <= self.failed <= 1:
            raise ValueError(f"failed must be in [0, 1], got {self.failed}")
        if not 16 <= self.side <= 4096:
            raise ValueError(f"side must be in 16..4096, got {self.side}")
        if not (np.isfinite(self.zipf) and self.zipf >= 0):
            raise ValueError(f"zipf must be finite and >= 0, got {self.zipf}")

    @property
    def index_digits(self) -> int:
        return math.ceil(math.log10(self.shard_size))

    @property
    def n_shards(self) -> int:
        return -(-self.images // self.shard_size)

    def shard_rows(self, shard: int) -> range:
        """Global row indices of `shard`."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.images))


def corpus_key(params: CorpusParams, index: int) -> str:
    """img2dataset's key (its compute_key): shard * 10^ceil(log10(shard_size)) + index within the
    shard, zero-padded to KEY_DIGITS digits."""
    shard, within = divmod(index, params.shard_size)
    return f"{shard * 10 ** params.index_digits + within:0{KEY_DIGITS}d}"


@functools.lru_cache(maxsize=4)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / (side - 1)
    basis = np.cos(np.pi * np.outer(np.arange(LOW_FREQ), (np.arange(side) + 0.5) / side)).astype(np.float32)
    return x, y, basis  # basis: LOW_FREQ x side, the DCT-II cosines a perceptual hash keeps


def draw_image(rng: np.random.Generator, side: int):
    """A PIL RGB image: a linear gradient between two random colours at a random angle, a random
    low-frequency field (random coefficients of the first LOW_FREQ x LOW_FREQ 2-D cosines, so
    that perceptual hashes, built from those, are independent from image to image: dedup's
    phash then finds only true copies), uniform noise (what makes JPEGs of a few KB, as photos
    are), and 2-6 filled shapes."""
    from PIL import Image, ImageDraw

    c0, c1 = (rng.integers(0, 256, 3).astype(np.float32) for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    x, y, basis = _grid(side)
    t = np.cos(angle) * x + np.sin(angle) * y
    t -= t.min()
    t /= max(float(t.max()), 1e-6)
    arr = c0 + (c1 - c0) * t[..., None]
    field = basis.T @ rng.normal(0, 12, (LOW_FREQ, LOW_FREQ)).astype(np.float32) @ basis
    arr += field[..., None] * rng.uniform(0.5, 1.5, 3).astype(np.float32)
    amp = int(rng.integers(10, 29))
    arr += rng.integers(-amp, amp + 1, (side, side, 3), dtype=np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    pad = max(2, side // 24)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, side, 4))
        box = [min(x0, x1), min(y0, y1), max(x0, x1) + pad, max(y0, y1) + pad]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = int(rng.integers(3))
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(int(rng.integers(side)), int(rng.integers(side))) for _ in range(3)], fill=colour)
    return img


def jpeg_bytes(img) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


@dataclass(frozen=True)
class Sampler:
    """The per-row draws' fixed tables (built once per process from the ranked tags)."""
    tags: tuple[str, ...]
    tag_cdf: np.ndarray
    count_cdf: np.ndarray

    @classmethod
    def build(cls, tags: Sequence[str], zipf: float) -> "Sampler":
        if not tags:
            raise ValueError("the tag universe is empty")
        count_cdf = np.cumsum(tags_per_image_pmf())
        count_cdf[-1] = 1.0
        return cls(tuple(tags), zipf_cdf(len(tags), zipf), count_cdf)


def draw_row(params: CorpusParams, sampler: Sampler, index: int, image: bool = True) -> dict:
    """Row `index` of the corpus (a function of (seed, index) alone): the Parquet row's fields and,
    for a success with image=True, "jpg" (the bytes). image=False skips drawing the image (its
    sha256 and the image's own draws are then absent): captions and statuses stay the same."""
    rng = np.random.default_rng([params.seed, index])
    u_status, u_kind, u_err, u_tpl, u_count = rng.random(5)
    n_tags = 1 + int(np.searchsorted(sampler.count_cdf, u_count, side="right"))
    ranks = np.searchsorted(sampler.tag_cdf, rng.random(n_tags), side="right")
    tags = [sampler.tags[r] for r in ranks]
    orig_w, orig_h = (int(v) for v in rng.integers(params.side, 8 * params.side, 2))
    caption = TEMPLATES[int(u_tpl * len(TEMPLATES))].format(tags[0]) + " " + " ".join("#" + t for t in tags)
    uid = hashlib.blake2b(f"{params.seed}:{index}".encode(), digest_size=8).hexdigest()
    row = {"key": corpus_key(params, index), "status": SUCCESS, "error_message": None, "caption": caption,
           "url": f"https://img{index % 8}.example.com/{params.seed}/{uid}.jpg", "width": params.side,
           "height": params.side, "original_width": orig_w, "original_height": orig_h, "sha256": None, "uid": uid}
    if u_status < params.failed:
        resize = u_kind < RESIZE_SHARE
        errors = RESIZE_ERRORS if resize else DOWNLOAD_ERRORS
        row.update(status=FAILED_RESIZE if resize else FAILED_DOWNLOAD, error_message=errors[int(u_err * len(errors))],
                   width=None, height=None, original_width=orig_w if resize else None,
                   original_height=orig_h if resize else None)
    elif image:
        row["jpg"] = jpeg_bytes(draw_image(rng, params.side))
        row["sha256"] = hashlib.sha256(row["jpg"]).hexdigest()
    return row


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def shard_stem(shard: int) -> str:
    return f"{shard:05d}"


def write_shard(out: str | os.PathLike, params: CorpusParams, sampler: Sampler, shard: int) -> dict:
    """DIR/NNNNN.tar, NNNNN.parquet, then NNNNN_stats.json (atomic renames, stats last); returns
    the stats. A shard whose stats exist is skipped (its stats are returned)."""
    out = Path(out)
    stem = shard_stem(shard)
    stats_path = out / f"{stem}_stats.json"
    if stats_path.is_file():
        return json.loads(stats_path.read_text())
    rows = []
    with atomic_path(out / f"{stem}.tar") as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for index in params.shard_rows(shard):
            row = draw_row(params, sampler, index)
            jpg = row.pop("jpg", None)
            rows.append(row)
            if jpg is None:
                continue
            meta = {k: row[k] for k in ("key", "status", "caption", "url", "width", "height", "original_width",
                                        "original_height", "sha256", "error_message", "uid")}
            _add_member(tar, f"{row['key']}.jpg", jpg)
            _add_member(tar, f"{row['key']}.txt", row["caption"].encode())
            _add_member(tar, f"{row['key']}.json", json.dumps(meta, sort_keys=True).encode())
    with atomic_path(out / f"{stem}.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=CORPUS_PARQUET), tmp)
    status = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    errors: dict[str, int] = {}
    for r in rows:
        if r["error_message"]:
            errors[r["error_message"]] = errors.get(r["error_message"], 0) + 1
    stats = {"count": len(rows), "successes": status[SUCCESS], "failed_to_download": status[FAILED_DOWNLOAD],
             "failed_to_resize": status[FAILED_RESIZE], "status_dict": {k: v for k, v in status.items() if v},
             "error_counts": dict(sorted(errors.items())), "shard": shard, "params": asdict(params),
             "generator": GENERATOR}
    write_text_atomic(stats_path, json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats


_WORKER: dict = {}  # the process pool's per-worker sampler


def _init_worker(params: CorpusParams, tags: tuple[str, ...]) -> None:
    _WORKER["sampler"] = Sampler.build(tags, params.zipf)
    _WORKER["params"] = params


def _write_in_worker(out: str, shard: int) -> dict:
    return write_shard(out, _WORKER["params"], _WORKER["sampler"], shard)


def write_corpus(out: str | os.PathLike, params: CorpusParams, tags: Sequence[str], workers: int = 1,
                 shards: Sequence[int] | None = None) -> dict:
    """Every shard (or `shards`) of the corpus under `out`, `workers` processes; returns the totals
    of the shards' stats (img2dataset's count, successes, failed_to_*)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = list(range(params.n_shards) if shards is None else shards)
    bad = [s for s in todo if not 0 <= s < params.n_shards]
    if bad:
        raise ValueError(f"shards {bad} outside 0..{params.n_shards - 1}")
    if workers <= 1 or len(todo) <= 1:
        sampler = Sampler.build(tags, params.zipf)
        stats = [write_shard(out, params, sampler, s) for s in todo]
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(params, tuple(tags))) as pool:
            stats = list(pool.map(_write_in_worker, [str(out)] * len(todo), todo))
    return {k: sum(s[k] for s in stats) for k in ("count", "successes", "failed_to_download", "failed_to_resize")}


def corpus_complete(out: str | os.PathLike, params: CorpusParams) -> bool:
    """Every shard's stats exist (stats are written last) with these parameters."""
    for shard in range(params.n_shards):
        p = Path(out) / f"{shard_stem(shard)}_stats.json"
        if not p.is_file():
            return False
        stats = json.loads(p.read_text())
        if stats.get("params") != asdict(params) or stats.get("generator") != GENERATOR:
            return False
    return True


def corpus_tags(n_tags: int, seed: int, wordnet: str | None = None) -> list[str]:
    """pipeline/synthetic.py's ranked hashtag universe (rank order) over WordNet."""
    from pipeline.synthetic import tag_universe
    from pipeline.wordnet import load_wordnet

    return tag_universe(load_wordnet(wordnet), n_tags, seed)


@dataclass(frozen=True)
class CorpusConfig:
    out: str = key(help="output folder: NNNNN.tar, NNNNN.parquet, NNNNN_stats.json")
    images: int = key(help="input rows (URLs) in all, failed ones included")
    seed: int = key(0, "seed of the tag universe and of every row")
    shard_size: int = key(1000, "rows per shard")
    failed: float = key(0.02, "share of rows that fail (download, or 1 in 10 of them resize)")
    side: int = key(96, "image side in pixels")
    workers: int = key(1, "processes writing shards")
    zipf: float = key(1.1, "exponent s of p(rank) ~ rank^-s of the caption hashtags")
    tags: int = key(DEFAULT_TAGS, "size of the tag universe")
    wordnet: str | None = key(None, "NLTK wordnet corpus directory; null: pipeline.wordnet's default")

    def __post_init__(self):
        if not self.out:
            raise ValueError("out must name a folder")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self.params()

    def params(self) -> CorpusParams:
        return CorpusParams(images=self.images, seed=self.seed, shard_size=self.shard_size, failed=self.failed,
                            side=self.side, zipf=self.zipf)


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(CorpusConfig, argv, "pipeline.synthetic_corpus", __doc__)
    t0 = time.perf_counter()
    tags = corpus_tags(cfg.tags, cfg.seed, cfg.wordnet)
    t1 = time.perf_counter()
    totals = write_corpus(cfg.out, cfg.params(), tags, cfg.workers)
    dt = time.perf_counter() - t1
    print(f"[synthetic_corpus] {totals['count']} rows ({totals['successes']} images, {totals['failed_to_download']} "
          f"failed downloads, {totals['failed_to_resize']} failed resizes) in {cfg.params().n_shards} shards -> "
          f"{cfg.out}: tag universe {t1 - t0:.1f}s, shards {dt:.1f}s ({totals['count'] / max(dt, 1e-9):.0f} rows/s, "
          f"{cfg.workers} worker(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
