"""Reading the toolkit's own tables with their schema checked (schemas/ is the reference)."""
from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame

import schemas


def read_checked(spark, path: str, schema: pa.Schema) -> DataFrame:
    """The Parquet table at `path`; a ValueError naming the path if it is absent or mistyped."""
    try:
        df = spark.read.parquet(path)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot read: {msg}") from None
    expected = schemas.spark_schema(schema)
    got = {f.name: f.dataType for f in df.schema.fields}
    for f in expected.fields:
        if f.name not in got:
            raise ValueError(f"{path}: missing column {f.name!r}")
        if got[f.name].simpleString() != f.dataType.simpleString():
            raise ValueError(f"{path}: column {f.name!r} is {got[f.name].simpleString()}, "
                             f"expected {f.dataType.simpleString()}")
    return df
