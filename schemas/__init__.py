"""Every table the toolkit reads or writes, as pyarrow schemas: the one source of truth.

Spark StructTypes are derived from these in `spark_schema`; tests check written Parquet
against them with `check_schema`.
"""
from __future__ import annotations

import pyarrow as pa

# --- manifest: the pipeline's input --------------------------------------------------------
# Required: image_id, image (path/URI string, or encoded bytes), and hashtags and/or caption.
# Every other column passes through untouched.
MANIFEST_ID = "image_id"
MANIFEST_IMAGE = "image"
MANIFEST_HASHTAGS = "hashtags"
MANIFEST_CAPTION = "caption"
MANIFEST_TEXT = "text"
MANIFEST_FIELDS = {
    MANIFEST_ID: (pa.string(),),
    MANIFEST_IMAGE: (pa.string(), pa.binary()),
    MANIFEST_HASHTAGS: (pa.list_(pa.string()),),
    MANIFEST_CAPTION: (pa.string(),),
    MANIFEST_TEXT: (pa.string(),),
}
# The manifest column an image's text is taken from for image-text training (LiT): the first of
# these present wins; they pass through jobs/label.py into labeled.parquet, and jobs/shards.py
# writes the text into each sample's .json as "text". A caption's `#words` also feed the hashtag
# vocabulary (jobs/lib/manifest.py, as before); a `text` column never does.
TEXT_COLUMNS = (MANIFEST_TEXT, MANIFEST_CAPTION)


def text_column(columns) -> str | None:
    """The first of TEXT_COLUMNS among `columns` (a table's column names), or None."""
    return next((c for c in TEXT_COLUMNS if c in columns), None)
# The manifest written by jobs/ingest_openclipart.py and pipeline/synthetic.py.
MANIFEST = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image", pa.string()),
    pa.field("hashtags", pa.list_(pa.string())),
])
# openclipart adds each image's top-level folder and its SVG's dc:title + dc:description ("" if none).
OPENCLIPART_MANIFEST = MANIFEST.append(pa.field("category", pa.string())).append(pa.field(MANIFEST_TEXT, pa.string()))

# --- vocabulary (jobs/vocab.py) ------------------------------------------------------------
VOCAB = pa.schema([
    pa.field("label", pa.int32(), nullable=False),   # dense 0..C-1, by images desc, ties by key
    pa.field("name", pa.string(), nullable=False),   # most frequent raw hashtag of the label
    pa.field("key", pa.string(), nullable=False),    # sorted synset names joined with '+'
    pa.field("synsets", pa.list_(pa.string()), nullable=False),
    pa.field("hashtags", pa.list_(pa.string()), nullable=False),  # normalized hashtags merged
    pa.field("images", pa.int64(), nullable=False),  # f(h): images carrying the label
])
HASHTAG_MAP = pa.schema([
    pa.field("hashtag", pa.string(), nullable=False),  # normalized raw hashtag
    pa.field("label", pa.int32(), nullable=False),
])
# Each kept manifest image's normalized hashtags, written once by jobs/vocab.py and read by
# jobs/label.py and jobs/dataset_card.py instead of normalizing again. One row per kept image (an image
# whose hashtags all normalize to '' has an empty list).
IMAGE_HASHTAGS = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("hashtags", pa.list_(pa.string()), nullable=False),  # distinct, sorted, non-empty strings
])

# Each distinct raw tag string of the manifest and its normalized hashtag ('' when nothing is
# left), written by jobs/vocab.py: jobs/label.py maps raw tags through it without normalizing again.
RAW_MAP = pa.schema([
    pa.field("raw", pa.string(), nullable=False),
    pa.field("hashtag", pa.string(), nullable=False),
])

# Each image a shard set stores (jobs/shards.py OUT/images.parquet): `image` is the stored-image
# index, dense in shard order (shards.json first_image + ordinal), the sample number in the .beton.
SHARD_IMAGES = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image", pa.int64(), nullable=False),
    pa.field("shard", pa.int64(), nullable=False),
    pa.field("ordinal", pa.int64(), nullable=False),
])


def spark_schema(schema: pa.Schema):
    """The Spark StructType for a pyarrow schema (the only place types are translated)."""
    from pyspark.sql import types as T

    def conv(t: pa.DataType):
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return T.StringType()
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return T.BinaryType()
        if pa.types.is_int64(t):
            return T.LongType()
        if pa.types.is_int32(t):
            return T.IntegerType()
        if pa.types.is_int16(t):
            return T.ShortType()
        if pa.types.is_boolean(t):
            return T.BooleanType()
        if pa.types.is_float64(t):
            return T.DoubleType()
        if pa.types.is_float32(t):
            return T.FloatType()
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return T.ArrayType(conv(t.value_type), t.value_field.nullable)
        raise TypeError(f"no Spark type for {t}")

    return T.StructType([T.StructField(f.name, conv(f.type), f.nullable) for f in schema])


def check_schema(actual: pa.Schema, expected: pa.Schema, where: str = "table") -> None:
    """Raise ValueError naming `where` and the column unless every expected field is present
    with the expected type (extra columns are allowed: they pass through)."""
    for f in expected:
        i = actual.get_field_index(f.name)
        if i < 0:
            raise ValueError(f"{where}: missing column {f.name!r} ({f.type})")
        got = actual.field(i).type
        if not _same_type(got, f.type):
            raise ValueError(f"{where}: column {f.name!r} is {got}, expected {f.type}")


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    if (pa.types.is_list(a) or pa.types.is_large_list(a)) and (pa.types.is_list(b) or pa.types.is_large_list(b)):
        return _same_type(a.value_type, b.value_type)
    if pa.types.is_large_string(a):
        a = pa.string()
    if pa.types.is_large_binary(a):
        a = pa.binary()
    return a.equals(b)

# --- labeled images (jobs/label.py) ---------------------------------------------------------
LABELED = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image", pa.string()),                       # or binary: passes through as read
    pa.field("labels", pa.list_(pa.int32()), nullable=False),  # sorted, distinct, non-empty
    pa.field("importance", pa.float64(), nullable=False),      # max over labels of f(h)^-1/2
    pa.field("tail", pa.bool_(), nullable=False),              # some label has f(h) < threshold
])

# --- resampled sample index (jobs/resample.py) ----------------------------------------------
SAMPLES = pa.schema([
    pa.field("position", pa.int64(), nullable=False),  # 0..M-1, a seeded global shuffle
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image", pa.string()),
    pa.field("labels", pa.list_(pa.int32()), nullable=False),
    pa.field("tail", pa.bool_(), nullable=False),
])

# --- the class count C: one source, the vocabulary --------------------------------------------
# jobs/label.py writes C (the vocabulary's size) and the vocabulary's directory into the metadata
# of the `labels` column of labeled.parquet; jobs/resample.py carries them into samples.parquet;
# jobs/shards.py writes C into shards.json as num_classes. Spark keeps a column's metadata in the
# Parquet footer (its schema JSON under SPARK_ROW_METADATA) and reads it back into df.schema.
NUM_CLASSES = "num_classes"
CLASSES_FROM = "vocabulary"
SPARK_ROW_METADATA = b"org.apache.spark.sql.parquet.row.metadata"


def with_class_count(table: pa.Table, num_classes: int, vocabulary: str) -> pa.Table:
    """`table` (LABELED or SAMPLES rows, written with pyarrow) with the class count in its footer
    as Spark writes it, so Spark jobs and `class_count_of` read it back."""
    st = spark_schema(table.schema)
    for f in st.fields:
        if f.name == "labels":
            f.metadata = {NUM_CLASSES: int(num_classes), CLASSES_FROM: str(vocabulary)}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), SPARK_ROW_METADATA: st.json().encode()})


def class_count_of(path) -> tuple[int, str]:
    """(C, vocabulary directory) from the footer of a Parquet file, or of the first part file of
    a Spark output directory; a ValueError naming the path when it is not recorded."""
    import json
    from pathlib import Path

    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no Parquet files")
    meta = (pq.read_schema(files[0]).metadata or {}).get(SPARK_ROW_METADATA)
    fields = {f["name"]: f.get("metadata", {}) for f in json.loads(meta)["fields"]} if meta else {}
    return class_count_from(fields.get("labels", {}), str(files[0]))


def class_count_from(labels_metadata: dict, where: str) -> tuple[int, str]:
    """(C, vocabulary directory) from a `labels` column's metadata; a ValueError naming `where`."""
    if NUM_CLASSES not in labels_metadata:
        raise ValueError(f"{where}: the labels column records no class count ({NUM_CLASSES} metadata): "
                         "written by an older jobs/label.py or jobs/resample.py, or not by them; rerun them")
    return int(labels_metadata[NUM_CLASSES]), str(labels_metadata.get(CLASSES_FROM, "?"))


# --- near-duplicates of evaluation images (jobs/dedup.py) -----------------------------------
# OUT/manifest.parquet has the input manifest's schema (matched pretraining images removed).
DUPLICATES = pa.schema([
    pa.field("pretrain_id", pa.string(), nullable=False),  # image_id in the input manifest
    pa.field("eval_set", pa.string(), nullable=False),     # name of the --eval source
    pa.field("eval_id", pa.string(), nullable=False),      # image_id in that evaluation set
    pa.field("distance", pa.float32(), nullable=False),    # phash: Hamming bits of 63; embedding, rmac: 1 - cosine
    pa.field("flipped", pa.bool_(), nullable=False),       # matched the mirrored evaluation image
    pa.field("crop", pa.list_(pa.float32()), nullable=False),  # [left, top, right, bottom] cut off the eval image
    pa.field("correlation", pa.float32()),                 # aligned 16x16 luma thumbnails (dedup/pair_check.py)
])
# OUT/neighbours.parquet: each evaluation image's nearest pretraining images (WSL's k = 21 lists),
# from the nearest evaluation images every pretraining image reported (--probe of them)
NEIGHBOURS = pa.schema([
    pa.field("eval_set", pa.string(), nullable=False),
    pa.field("eval_id", pa.string(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),          # 1 = nearest
    pa.field("pretrain_id", pa.string(), nullable=False),
    pa.field("distance", pa.float32(), nullable=False),    # as in duplicates.parquet
    pa.field("flipped", pa.bool_(), nullable=False),       # nearest through the mirrored evaluation image
    pa.field("crop", pa.list_(pa.float32()), nullable=False),  # the evaluation variant's crop
    pa.field("matched", pa.bool_(), nullable=False),       # the pair is in duplicates.parquet
])
