"""Reading the toolkit's own tables with their schema checked (schemas/ is the reference)."""
from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

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


def class_count(df: DataFrame, path: str) -> tuple[int, str]:
    """(C, vocabulary directory) recorded in the `labels` column's metadata of a table read from
    `path` (see schemas.NUM_CLASSES); a ValueError naming the path when it is missing."""
    return schemas.class_count_from(df.schema["labels"].metadata, path)


def with_class_count(df: DataFrame, num_classes: int, vocabulary: str) -> DataFrame:
    """`df` with (C, vocabulary) in its `labels` column's metadata, column order kept."""
    meta = {schemas.NUM_CLASSES: int(num_classes), schemas.CLASSES_FROM: str(vocabulary)}
    return df.select(*[F.col(c).alias(c, metadata=meta) if c == "labels" else F.col(c) for c in df.columns])


def check_label_range(df: DataFrame, num_classes: int, path: str, vocabulary: str) -> None:
    """A ValueError naming both sources unless every label of `df` is in [0, num_classes)."""
    lo, hi = df.select(F.min(F.array_min("labels")), F.max(F.array_max("labels"))).first()
    if lo is not None and (lo < 0 or hi >= num_classes):
        bad = hi if hi >= num_classes else lo
        raise ValueError(f"{path}: label {bad} is outside [0, {num_classes}), the class count of the vocabulary "
                         f"{vocabulary} recorded in its labels column: the table and the vocabulary disagree")
