"""pipeline/tag_arrays.py on plain values, expected results written by hand."""
import numpy as np
import pyarrow as pa

from pipeline.tag_arrays import codes_per_row, dedupe_sorted, distinct_values, flat_with_rows, value_counts


def test_codes_per_row_maps_dedupes_and_sorts_each_row():
    lists = pa.array([["b", "a", "b"], None, [], ["zz", "a"], ["c", "c", "a", "b"]], pa.list_(pa.string()))
    keys = pa.array(["a", "b", "c", "zz"])
    codes = np.array([2, 0, 1, -1])  # a -> 2, b -> 0, c -> 1, zz -> no code
    offsets, values = codes_per_row(lists, keys, codes, 3)
    rows = [values[offsets[r]:offsets[r + 1]].tolist() for r in range(len(lists))]
    assert rows == [[0, 2], [], [], [2], [0, 1, 2]]


def test_dedupe_sorted_from_pairs_in_any_order_within_rows():
    rows = np.array([0, 0, 0, 2, 2, 3])
    codes = np.array([5, 1, 5, 0, 0, 9])
    offsets, values = dedupe_sorted(rows, codes, 5, 10)
    assert offsets.tolist() == [0, 2, 2, 3, 4, 4] and values.tolist() == [1, 5, 0, 9]
    offsets, values = dedupe_sorted(np.array([], np.int64), np.array([], np.int64), 2, 10)
    assert offsets.tolist() == [0, 0, 0] and values.tolist() == []


def test_flat_values_rows_distinct_and_counts():
    lists = pa.array([["x", None], None, ["y", "x"]], pa.list_(pa.string()))
    flat, rows = flat_with_rows(lists)
    assert flat.to_pylist() == ["x", None, "y", "x"] and rows.tolist() == [0, 0, 2, 2]
    assert sorted(distinct_values(lists).to_pylist()) == ["x", "y"]
    v, n = value_counts(pa.array(["x", "y", "x"]))
    assert dict(zip(v.to_pylist(), n.tolist())) == {"x": 2, "y": 1}
