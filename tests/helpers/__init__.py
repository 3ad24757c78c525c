"""What the tests share, in one place; no test module imports another.

    launch     child processes: their environment, torchrun launches, killing a launch with its ranks
    runs       a trainer's run directory: its metrics, the step a rerun resumed at, a kill's leftovers
    ranks      values a rank script and its one-process reference both build (imported by dotted path)
    shardkit   tiny shard sets and sample indices in the layout jobs/shards.py and jobs/resample.py write
    readerkit  shard sets of unique images whose colour gives their stored index (the reader tests)
    litkit     a tiny image-text problem for trainer.lit and LiT zero-shot
    ckptkit    tiny checkpoint records (trainer/checkpoint.Checkpoint) for the checkpoint-file tests
    images     hand-made images and image folders: bad, awkward and synthetic ones
    jobkit     the Spark jobs' inputs as the previous stage writes them, and readers of their outputs
    dedupkit   the constructed contamination case of issue 8
    skewkit    vocab and label in a fresh bounded-memory SparkContext (`python -m tests.helpers.skewkit`)

The Spark session and the shared fixtures are in tests/conftest.py.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
