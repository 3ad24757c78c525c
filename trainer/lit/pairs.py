"""LiT's training pairs: the locked image tower's embedding of every stored image that has a
text, computed once, beside the text's tokens; and the loader over them.

A locked tower with no head gives each image one fixed embedding, so the images are decoded and
embedded once (evaluation transform: shorter side to img_size, center crop, as the transfer
protocols) instead of every step. Each rank embeds the shards i with i % world_size == rank
(a DataLoader's workers decode, one shard per item); the results are per-shard files in
PAIRS_DIR (default RUN_DIR/pairs):

    shard-000012.image.npy    float32 [n, D]  pooled features of the images with a text
    shard-000012.texts.json   [image_id, ...], [text, ...]: the n pairs' ids and texts
    shard-000012.json         written last: fingerprint, pairs, images, no_text, bad (names)
    shard-000012.tokens.npy   int32 [n, L]    the texts' tokens; .tokens.json marks them done

A shard is redone only when its fingerprint (the tower's weights, the tar's sha256, img_size,
the decoder; for tokens also the tokenizer and context length) changed, so a resumed or rerun
job does not embed again. Arrays are .npy read with mmap_mode="r" and allow_pickle=False: no
pickle, and host memory does not grow with the corpus. Texts come from the shards' .json
metadata ("text", written by jobs/shards.py from the manifest's text column): only images of
the pretraining shards, never the held-out set's. Samples are read, validated and decoded by
pipeline/wds.py under its one policy: a damaged sample is an error naming it, an image that does
not decode is left out, counted and named ("bad").

PairLoader: epoch e puts the shard files in an order seeded by (seed, e) and shuffles the
pairs within each window of shuffle_window files (seeded by (seed, e, window)): a full shuffle
when the corpus has fewer shards, and at web scale a stretch of batches reads a bounded set of
files, with no permutation of all pairs in memory. Global batch k is the epoch's k-th run of
batch_size pairs (the incomplete last one dropped). Every rank gets the global batch's image
embeddings and its own share of the tokens, so the order does not depend on the world size, and
a resumed epoch starts at its batch without reading the ones before (earlier windows are skipped
by their sizes).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.images import DECODER_VERSION
from pipeline.wds import Skips, decode, read_samples
from trainer.data.shard_set import ShardInfo, ShardSet
from trainer.data.transforms import eval_transform, pixel_stats
from trainer.distributed import DistInfo
from trainer.lit.tokenizer import encode, tokenizer_sha256

log = logging.getLogger("lit")
TRANSFORM = "resize-shorter+center-crop"


def _stem(shard: ShardInfo) -> str:
    return shard.path.name.removesuffix(".tar")


def image_fingerprint(shard: ShardInfo, tower_key: str, img_size: int) -> str:
    ident = [shard.path.name, shard.sha256 or f"{shard.bytes}", tower_key, img_size, DECODER_VERSION, TRANSFORM]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


class ShardImages(Dataset):
    """Item i: the i-th shard's images with a text, decoded and cropped: (uint8 [n, 3, S, S], ids,
    texts, images in the shard, without text, bad 'shard:key: reason' names)."""

    def __init__(self, shards: list[ShardInfo], size: int):
        self.shards, self.size = shards, size

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int):
        shard, transform = self.shards[i], eval_transform(self.size)
        images, ids, texts, no_text, n = [], [], [], 0, 0
        bad = Skips(warn=False)  # counted and named in the shard's marker (pipeline/wds.py's policy)
        for sample in read_samples(shard.path, handler=bad):
            n += 1
            text = sample.text.strip()
            if not text:
                no_text += 1
                continue
            pixels = decode(sample, bad)
            if pixels is None:
                continue
            images.append(transform(torch.from_numpy(pixels).permute(2, 0, 1)))
            ids.append(sample.image_id)
            texts.append(text)
        stack = torch.stack(images) if images else torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)
        return stack, ids, texts, n, no_text, bad.names


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def _marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@torch.no_grad()
def embed_images(index: ShardSet, trunk: torch.nn.Module, mean, std, tower_key: str, img_size: int,
                 out: Path, d: DistInfo, workers: int, batch_size: int = 64) -> int:
    """This rank's shards' image embeddings and texts (skipping shards already done); returns the
    number of shards it embedded."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for i, s in enumerate(index.shards) if i % d.world_size == d.rank and
            (_marker(out / f"{_stem(s)}.json") or {}).get("fingerprint") != image_fingerprint(s, tower_key, img_size)]
    if not todo:
        return 0
    trunk = trunk.to(d.device).eval()
    m, s_ = pixel_stats(mean, d.device), pixel_stats(std, d.device)
    loader = DataLoader(ShardImages(todo, img_size), batch_size=None, num_workers=workers)
    for shard, (images, ids, texts, n, no_text, bad) in zip(todo, loader):
        feats = [trunk(x.to(d.device).float().sub_(m).div_(s_)).float().cpu() for x in images.split(batch_size)]
        emb = torch.cat(feats).numpy() if feats else np.zeros((0, getattr(trunk, "num_features", 0)), np.float32)
        stem = _stem(shard)
        _save_npy(out / f"{stem}.image.npy", np.ascontiguousarray(emb, dtype=np.float32))
        write_text_atomic(out / f"{stem}.texts.json", json.dumps({"image_ids": ids, "texts": texts}))
        write_text_atomic(out / f"{stem}.json", json.dumps({
            "fingerprint": image_fingerprint(shard, tower_key, img_size), "pairs": len(ids), "images": n,
            "no_text": no_text, "bad": bad}))
        if d.is_main:
            log.info("embedded %s: %d pairs of %d images (%d without text, %d undecodable)", shard.path.name,
                     len(ids), n, no_text, len(bad))
    return len(todo)


def read_texts(index: ShardSet, out: Path, limit: int) -> list[str]:
    """The pairs' texts in shard order, at most `limit` (what the tokenizer learns from)."""
    texts: list[str] = []
    for s in index.shards:
        if len(texts) >= limit:
            break
        texts += json.loads((out / f"{_stem(s)}.texts.json").read_text())["texts"][:limit - len(texts)]
    return texts


def tokenize_pairs(index: ShardSet, tok: Tokenizer, context_length: int, out: Path, d: DistInfo) -> int:
    """This rank's shards' tokens (skipping those already done with this tokenizer)."""
    done = 0
    tok_key = f"{tokenizer_sha256(tok)}:{context_length}"
    for i, s in enumerate(index.shards):
        stem = _stem(s)
        fp = (_marker(out / f"{stem}.json") or {}).get("fingerprint")
        done_with = (_marker(out / f"{stem}.tokens.json") or {}).get("fingerprint")
        if i % d.world_size != d.rank or done_with == f"{fp}:{tok_key}":
            continue
        texts = json.loads((out / f"{stem}.texts.json").read_text())["texts"]
        _save_npy(out / f"{stem}.tokens.npy", encode(tok, texts, context_length))
        write_text_atomic(out / f"{stem}.tokens.json", json.dumps({"fingerprint": f"{fp}:{tok_key}"}))
        done += 1
    return done


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class PairStore:
    """Every shard's pairs in shard order: pair p is row p - offsets[f] of file f. Files are
    memory-mapped when first read, at most `max_open` at a time (least recently used closed
    first): a corpus of millions of shards stays within the process's map count."""

    def __init__(self, stems: list[Path], sizes: list[int], stats: dict, max_open: int = 256):
        self.stems, self.stats, self.max_open = stems, stats, max_open
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._open: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        img, tok = self.file(0)
        self.dim, self.context_length = int(img.shape[1]), int(tok.shape[1])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def files(self) -> int:
        return len(self.stems)

    def file(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        if j in self._open:
            self._open.move_to_end(j)
            return self._open[j]
        stem, n = self.stems[j], int(self.offsets[j + 1] - self.offsets[j])
        img = np.load(f"{stem}.image.npy", mmap_mode="r", allow_pickle=False)
        tok = np.load(f"{stem}.tokens.npy", mmap_mode="r", allow_pickle=False)
        if img.shape[0] != n or tok.shape[0] != n:
            raise ValueError(f"{stem}: {img.shape[0]} embeddings and {tok.shape[0]} token rows for {n} pairs; delete "
                             f"{stem.parent} and rerun")
        self._open[j] = (img, tok)
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return img, tok

    def rows(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [k, D], int32 [k, L]) of the pairs numbered `pairs`, in that order."""
        f = np.searchsorted(self.offsets, pairs, side="right") - 1
        img = np.empty((len(pairs), self.dim), np.float32)
        tok = np.empty((len(pairs), self.context_length), np.int32)
        for j in np.unique(f):
            sel = np.nonzero(f == j)[0]
            local = pairs[sel] - self.offsets[j]
            img_j, tok_j = self.file(int(j))
            img[sel], tok[sel] = img_j[local], tok_j[local]
        return img, tok


def open_pairs(index: ShardSet, out: Path) -> PairStore:
    stems, sizes = [], []
    stats = {"images": 0, "pairs": 0, "no_text": 0, "bad": []}
    for s in index.shards:
        stem = _stem(s)
        marker = _marker(out / f"{stem}.json")
        if marker is None:
            raise ValueError(f"{out}: no pairs of {s.path.name} ({stem}.json missing): the embedding pass did not "
                             "finish")
        for k in ("images", "pairs", "no_text"):
            stats[k] += int(marker[k])
        stats["bad"] += list(marker["bad"])
        if marker["pairs"] > 0:
            stems.append(out / stem)
            sizes.append(int(marker["pairs"]))
    if not sizes:
        raise ValueError(f"{index.root}: none of its {stats['images']} stored images has a text (the samples' .json "
                         "hold no \"text\"): write the shards from a manifest with a text or caption column")
    return PairStore(stems, sizes, stats)


class PairBatch(NamedTuple):
    images: torch.Tensor      # float32 [B, D]: the global batch's image embeddings
    tokens: torch.Tensor      # int32 [B / world, L]: this rank's texts
    positions: torch.Tensor   # int64 [B / world]: this rank's pair numbers
    skipped: tuple = ()


class PairLoader:
    """A trainer.data.protocol.TrainLoader over a PairStore (see the module docstring)."""
    order_depends_on = ()

    def __init__(self, store: PairStore, batch_size: int, rank: int, world_size: int, seed: int,
                 shuffle_window: int = 1024):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world size {world_size}")
        if shuffle_window < 1:
            raise ValueError(f"shuffle_window must be >= 1 shard, got {shuffle_window}")
        self.store, self.batch, self.rank, self.world, self.seed = store, batch_size, rank, world_size, seed
        self.window = shuffle_window
        self.epoch, self.start = 0, 0

    def epoch_batches(self, epoch: int) -> int:
        return len(self.store) // self.batch

    def epoch_stats(self, epoch: int) -> dict:
        return {"samples": len(self.store), "dropped": len(self.store) - self.epoch_batches(epoch) * self.batch}

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _windows(self, epoch: int) -> list[np.ndarray]:
        """The epoch's files in a seeded order, in windows of shuffle_window files."""
        files = np.random.default_rng([self.seed, epoch, 0x117]).permutation(self.store.files)
        return [files[w:w + self.window] for w in range(0, len(files), self.window)]

    def _window_pairs(self, epoch: int, w: int, files: np.ndarray) -> np.ndarray:
        off = self.store.offsets
        pairs = np.concatenate([np.arange(off[f], off[f + 1]) for f in files])
        return pairs[np.random.default_rng([self.seed, epoch, 0x118, w]).permutation(len(pairs))]

    def order(self, epoch: int) -> np.ndarray:
        """Every pair of the epoch in order (materialised: for inspection and tests)."""
        return np.concatenate([self._window_pairs(epoch, w, f) for w, f in enumerate(self._windows(epoch))])

    def _pairs_from(self, epoch: int, position: int):
        """The epoch's pair numbers from `position` on, one window at a time (the windows before
        the one holding `position` are skipped by their sizes alone)."""
        off, seen = self.store.offsets, 0
        for w, files in enumerate(self._windows(epoch)):
            size = int(sum(off[f + 1] - off[f] for f in files))
            if seen + size > position:
                yield self._window_pairs(epoch, w, files)[max(0, position - seen):]
            seen += size

    def __iter__(self):
        b, n = self.batch // self.world, self.epoch_batches(self.epoch)
        buffer, k = np.zeros(0, np.int64), self.start
        windows = self._pairs_from(self.epoch, self.start * self.batch)
        while k < n:
            while len(buffer) < self.batch:
                buffer = np.concatenate([buffer, next(windows)])
            pairs, buffer = buffer[:self.batch], buffer[self.batch:]
            img, tok = self.store.rows(pairs)
            mine = slice(self.rank * b, (self.rank + 1) * b)
            yield PairBatch(torch.from_numpy(img), torch.from_numpy(tok[mine].copy()),
                            torch.from_numpy(pairs[mine].copy()))
            k += 1

    def __len__(self) -> int:
        return self.epoch_batches(self.epoch)
