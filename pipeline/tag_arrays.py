"""Vectorised per-image tag kernels on Arrow list arrays (pyarrow + numpy, no Python per row).

The Spark jobs run these inside `mapInArrow`, one record batch at a time, so the row-scale work
of the vocab and label jobs happens where each manifest partition lies: a list of strings per
image is flattened, looked up in a small table (`pc.index_in`), turned into integer codes,
deduplicated and sorted per image, and either rebuilt as lists or counted.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def flat_with_rows(lists: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(the lists' values, the row of each value); null lists count as empty."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    return pc.list_flatten(lists), np.repeat(np.arange(len(lists), dtype=np.int64), lengths)


def distinct_values(lists: pa.Array) -> pa.Array:
    """The distinct non-null values of a list<string> array."""
    return pc.unique(pc.drop_null(pc.list_flatten(lists)))


def lookup(values: pa.Array, keys: pa.Array, codes: np.ndarray) -> np.ndarray:
    """codes[i] for each value equal to keys[i]; -1 where the value is not among the keys."""
    idx = pc.fill_null(pc.index_in(values, value_set=keys), -1).to_numpy(zero_copy_only=False)
    return np.where(idx >= 0, codes[np.maximum(idx, 0)], -1) if len(codes) else np.full(len(idx), -1)


def codes_per_row(lists: pa.Array, keys: pa.Array, codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values): each row's distinct codes >= 0 (values of `lists` mapped through
    keys -> codes), ascending; row r's are values[offsets[r]:offsets[r + 1]]."""
    flat, rows = flat_with_rows(lists)
    c = lookup(flat, keys, codes)
    keep = c >= 0
    return dedupe_sorted(rows[keep], c[keep], len(lists), n_codes)


def dedupe_sorted(rows: np.ndarray, codes: np.ndarray, n_rows: int, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of the distinct codes of each row, ascending, from (row, code) pairs."""
    # sorted by (row, code), repeats dropped; a plain sort: `rows` ascend already, and np.unique
    # (numpy 2's hash-based route, then a sort) costs 80x more on these keys
    key = np.sort(rows.astype(np.int64) * max(1, n_codes) + codes)
    key = key[np.concatenate(([True], key[1:] != key[:-1]))] if len(key) else key
    row, value = np.divmod(key, max(1, n_codes))
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(row, minlength=n_rows), out=offsets[1:])
    return offsets, value


def list_array(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def value_counts(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(distinct values, occurrences of each)."""
    vc = pc.value_counts(values)
    return vc.field("values"), vc.field("counts").to_numpy(zero_copy_only=False)
