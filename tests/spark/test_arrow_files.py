"""jobs/lib/arrow_files.py and jobs/lib/numbering.files_by_range on a real local[2] session."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.lib.arrow_files import data_files, map_parquet_files, readable_in_tasks
from jobs.lib.numbering import files_by_range


def _lengths(batches):
    """Per file: (tag, rows with it), a partial count, as the vocab job's counting passes make."""
    parts = [pc.value_counts(pc.list_flatten(b.column(0))) for b in batches]
    if parts:
        t = pa.table({"tag": pa.concat_arrays([p.field("values") for p in parts]),
                      "n": pa.concat_arrays([p.field("counts") for p in parts])})
        yield from t.group_by("tag").aggregate([("n", "sum")]).rename_columns(["tag", "n"]).to_batches()


def test_pyarrow_in_tasks_equals_sparks_route(spark, tmp_path):
    rng = np.random.default_rng(0)
    tags = [[f"t{int(x)}" for x in rng.zipf(1.5, size=int(k)) if x < 50] for k in rng.integers(0, 6, 3000)]
    df = spark.createDataFrame([(f"i{i}", t) for i, t in enumerate(tags)], "id string, tags array<string>")
    df.repartition(4).write.parquet(str(tmp_path / "t"))
    files = data_files(spark, str(tmp_path / "t"))
    assert len(files) == 4 and all(f.startswith("file:") and f.endswith(".parquet") for f in files)
    got = (map_parquet_files(spark, str(tmp_path / "t"), ["tags"], _lengths, "tag string, n long")
           .groupBy("tag").agg(F.sum("n").alias("n")).collect())
    spark_route = (spark.read.parquet(str(tmp_path / "t")).select("tags").mapInArrow(_lengths, "tag string, n long")
                   .groupBy("tag").agg(F.sum("n").alias("n")).collect())
    expected = {}
    for t in tags:
        for x in t:
            expected[x] = expected.get(x, 0) + 1
    assert dict((r["tag"], r["n"]) for r in got) == expected == dict((r["tag"], r["n"]) for r in spark_route)


def test_which_tables_tasks_read_themselves():
    assert readable_in_tasks("file:/data/t/part-0.parquet") and readable_in_tasks("s3a://b/t/part-0.parquet")
    assert not readable_in_tasks("hdfs://nn/t/part-0.parquet") and not readable_in_tasks("viewfs://c/t/p.parquet")


@pytest.mark.parametrize("total,n_files", [(1, 1), (10, 3), (1000, 7), (5000, 5)])
def test_files_by_range_holds_exact_sorted_ranges(spark, tmp_path, total, n_files):
    perm = np.random.default_rng(total).permutation(total)
    df = spark.createDataFrame([(int(p), f"x{p}") for p in perm], "position long, v string").repartition(3)
    out = tmp_path / "o"
    files_by_range(df, "position", total, n_files).write.parquet(str(out))
    parts = sorted(out.glob("part-*.parquet"))
    per = -(-total // n_files)
    got = [pq.read_table(p)["position"].to_pylist() for p in parts]
    assert [x for g in got for x in g] == list(range(total))  # files in name order: position order
    assert all(len(g) <= per for g in got)
    # partition k holds exactly [k * per, (k + 1) * per): no file holds two ranges
    for g in got:
        assert len({x // per for x in g}) <= 1
