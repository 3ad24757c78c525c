"""The dedup job's search before faiss, kept as bench/dedup_bench.py's baseline: candidate pairs of
near-duplicate hashes without comparing all pairs (pure, numpy).

Banding with probes (multi-index hashing, Norouzi et al. 2012): the hash bits are split into
`bands` contiguous bands. If two hashes differ in at most T bits, some band differs in at most
floor(T / bands) bits (pigeonhole: were every band `radius + 1` or more apart, the total would be
at least bands * (radius + 1) > T). So indexing every hash under its band values and probing each
query's band values XOR every mask of at most `radius` bits finds every pair within T. With
bands > T the radius is 0 and a probe is an exact band-value lookup.

Random hashes collide in a band of w bits with probability ~ probes / 2^w, so the candidate pairs
of a fixed query set grow linearly with the indexed set (bench/dedup_bench.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from dedup.phash import BITS, hamming_array


@dataclass(frozen=True)
class Banding:
    threshold: int        # pairs within this Hamming distance must become candidates
    bands: int            # contiguous bands of (nearly) equal width over `bits`
    bits: int = BITS

    def __post_init__(self):
        if not 0 <= self.threshold < self.bits:
            raise ValueError(f"threshold must be in [0, {self.bits}), got {self.threshold}")
        if not 1 <= self.bands <= self.bits:
            raise ValueError(f"bands must be in [1, {self.bits}], got {self.bands}")
        if self.bits > 64:
            raise ValueError("at most 64 bits")

    @property
    def radius(self) -> int:
        return self.threshold // self.bands

    def spans(self) -> list[tuple[int, int]]:
        """(shift, width) of each band: band value = (hash >> shift) & (2^width - 1)."""
        q, r = divmod(self.bits, self.bands)
        widths = [q + (1 if i < r else 0) for i in range(self.bands)]
        out, shift = [], self.bits
        for w in widths:
            shift -= w
            out.append((shift, w))
        return out

    def probe_masks(self, band: int) -> list[int]:
        """XOR masks (in the band's own bits) of weight <= radius; 0 first."""
        w = self.spans()[band][1]
        masks = [0]
        for k in range(1, self.radius + 1):
            masks += [sum(1 << i for i in c) for c in combinations(range(w), k)]
        return masks

    def probes_per_hash(self) -> int:
        return sum(len(self.probe_masks(b)) for b in range(self.bands))


def default_bands(threshold: int, bits: int = BITS) -> int:
    """threshold + 1 bands (radius 0: exact band lookups, the plain pigeonhole banding)."""
    return min(threshold + 1, bits)


def band_values(hashes: np.ndarray, banding: Banding) -> np.ndarray:
    """(n, bands) int64 band values of int64 hashes."""
    u = np.asarray(hashes, dtype=np.int64).view(np.uint64)
    cols = [(u >> np.uint64(s)) & np.uint64((1 << w) - 1) for s, w in banding.spans()]
    return np.stack(cols, axis=1).astype(np.int64)


def candidate_pairs(index: np.ndarray, queries: np.ndarray, banding: Banding) -> np.ndarray:
    """(m, 2) distinct (index row, query row) pairs sharing a probed band value, sorted."""
    iv, qv = band_values(index, banding), band_values(queries, banding)
    found = []
    for b in range(banding.bands):
        order = np.argsort(iv[:, b], kind="stable")
        keys = iv[order, b]
        for m in banding.probe_masks(b):
            probe = qv[:, b] ^ m
            lo = np.searchsorted(keys, probe, "left")
            hi = np.searchsorted(keys, probe, "right")
            n = hi - lo
            if not n.sum():
                continue
            q = np.repeat(np.arange(len(queries)), n)
            within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # 0..n_q-1 per query
            i = order[np.repeat(lo, n) + within]
            found.append(i.astype(np.int64) * len(queries) + q)  # one int per pair: cheap unique
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(found))
    return np.stack([codes // len(queries), codes % len(queries)], axis=1)


def pairs_within_threshold(index: np.ndarray, queries: np.ndarray, banding: Banding
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    """(pairs (m, 2), their distances, candidate count): candidates confirmed by Hamming distance."""
    cand = candidate_pairs(index, queries, banding)
    d = hamming_array(np.asarray(index)[cand[:, 0]], np.asarray(queries)[cand[:, 1]])
    keep = d <= banding.threshold
    return cand[keep], d[keep], len(cand)
