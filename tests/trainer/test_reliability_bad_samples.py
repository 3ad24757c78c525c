"""Undecodable images in the shards (issue 16: the bad-sample bug and item 29): each is dropped from
its batch only, counted and named, bounded by max_bad_samples; the layout of every other batch and
the number of decodes per batch stay what they are without bad images. Real shards, the real
WebDataset reader and trainer.
"""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.runs import TINY_PRETRAIN as BASE, forget_after, metrics
from tests.helpers.shardkit import write_sample_index, write_shard_set
from trainer.checkpoint import BadSampleTally, read_checkpoint


# --- bad samples (bug) and 29: skipped, counted, bounded; the layout unchanged ---------------------------

BAD = (17, 150, 263)  # stored images planted as undecodable: 1% of 300


def jpeg(i: int) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.full((24, 28, 3), (40 * (i % 6), 200 - 30 * (i % 6), 90), np.uint8)).save(b, "JPEG")
    return b.getvalue()


def bad_shards(root: Path, bad=BAD, n=300, shard_size=25) -> Path:
    """n images, label i % 6, with the images in `bad` cut short or not images at all."""
    members = []
    for i in range(n):
        data = jpeg(i)
        if i in bad:
            data = data[:len(data) // 3] if i % 2 else b"<html>404</html>"
        members.append((data, [i % 6]))
    return write_shard_set(root, members, shard_size, num_classes=6)


def index_with_copies(n=300, bad=BAD) -> list[int]:
    """Every image once, the bad ones and 9 others twice: 312 samples = 13 batches of 24, none dropped."""
    return list(range(n)) + list(bad) + list(range(1, 90, 10))


def test_bad_images_are_dropped_from_their_batch_only(tmp_path):
    from pipeline.wds import ShardError
    from trainer.data import wds_loader

    bad, good = bad_shards(tmp_path / "bad"), bad_shards(tmp_path / "good", bad=())
    epochs = [index_with_copies()]
    kw = dict(batch_size=24, rank=0, world_size=1, num_workers=0, train=True, size=16, shuffle_buffer=50,
              sample_index=write_sample_index(bad, tmp_path / "ib", epochs))
    with pytest.raises(ShardError, match=r"shard-0000\d\d\.tar:000000000(017|150|263): cannot decode image"):
        list(wds_loader(bad, **kw))  # the default: a bad image is an error naming shard:key
    with_bad = wds_loader(bad, skip_bad_images=True, **kw)
    kw["sample_index"] = write_sample_index(good, tmp_path / "ig", epochs)
    clean = wds_loader(good, **kw)
    image_of = np.array(epochs[0])  # position -> stored image
    skipped = []
    for epoch in range(3):
        with_bad.set_epoch(epoch)
        clean.set_epoch(epoch)
        for j, (b, c) in enumerate(zip(with_bad, clean)):
            keep = [p for p in c.positions.tolist() if image_of[p] not in BAD]
            assert b.positions.tolist() == keep, (epoch, j)  # the others stay in their batch and order
            assert len(b.skipped) == 24 - len(keep)
            if not b.skipped:
                assert torch.equal(b.images, c.images) and torch.equal(b.targets, c.targets)
            skipped += b.skipped
    keys = sorted(s.split(".tar:")[1][:12] for s in skipped)
    assert keys == sorted([f"{i:012d}" for i in BAD] * 2 * 3)  # 3 bad images x 2 copies x 3 epochs


def test_decodes_per_batch_do_not_grow_with_bad_samples(tmp_path):
    from trainer.data import wds_loader

    shards = bad_shards(tmp_path / "bad")
    samples = write_sample_index(shards, tmp_path / "index", [index_with_copies()])
    loader = wds_loader(shards, batch_size=24, rank=0, world_size=1, num_workers=0, train=True, size=16,
                        shuffle_buffer=50, sample_index=samples, skip_bad_images=True)
    sizes, decoded = [], []
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            sizes.append(len(batch.positions) + len(batch.skipped))
            decoded.append(loader.dataset.decoded)  # decode attempts so far, in this process (workers=0)
    # every batch tries exactly its 24 samples, bad or not: no retries, no re-reads, no growth
    assert sizes == [24] * 39 and np.diff([0] + decoded).tolist() == [24] * 39


def test_trainer_skips_counts_and_bounds_bad_samples(tmp_path):
    from trainer.loop import TooManyBadSamples
    from trainer.pretrain import main

    shards = bad_shards(tmp_path / "bad")
    samples = write_sample_index(shards, tmp_path / "index", [index_with_copies()])
    run = tmp_path / "run"
    args = [*BASE, "workers=1", f"shards={shards}", f"sample_index={samples}", f"run_dir={run}", "batch_size=24",
            "total_samples=936", "ckpt_every=13", "max_bad_samples=18"]  # 3 epochs of 13 steps
    result = main(args)
    planted = len(BAD) * 2 * 3  # images x copies x epochs
    assert result["step"] == 39 and result["bad_samples"] == planted
    assert json.loads((run / "result.json").read_text())["bad_samples"] == planted
    assert metrics(run)[-1]["bad_samples"] == planted
    assert [e["dropped"] for e in map(json.loads, (run / "epochs.jsonl").read_text().splitlines())] == [0, 0, 0]
    names = result["bad_sample_names"]
    assert len(names) == planted and read_checkpoint(run / "checkpoints" / "ckpt-000000039.pt").bad_samples == \
        BadSampleTally(planted, tuple(names))
    forget_after(run, 26)  # resumed after epoch 1: the count and the names go on from the checkpoint's
    resumed = main(args)
    assert resumed["bad_samples"] == planted
    assert resumed["bad_sample_names"] == names  # epochs 0 and 1's from the checkpoint, in the same order
    assert read_checkpoint(run / "checkpoints" / "ckpt-000000039.pt").bad_samples == BadSampleTally(planted,
                                                                                                    tuple(names))
    with pytest.raises(TooManyBadSamples, match=r"\d+ training samples .* max_bad_samples=6.*shard-0000\d\d\.tar:0"):
        main([*args, f"run_dir={tmp_path / 'strict'}", "max_bad_samples=6"])  # the 7th comes in epoch 1
    assert 13 <= len(metrics(tmp_path / "strict")) < 39
