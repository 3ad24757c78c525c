"""Shard readers (trainer/data) on tiny shard sets of unique images written by the real writers.

Stored image i has a JPEG whose central square holds COLOURS[i] (see jpeg_of) and labels_of(i):
decoding the colour back gives i, so image, labels and the sample index's position can be checked
to stay together through sharding, sampling, shuffling, batching and resuming
(tests/helpers/readerkit.py; its shard sets shards8, shards4 and indexed are fixtures in tests/conftest.py).
"""
import gc
import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.wds import ShardError, shard_name
from tests.helpers.readerkit import C, COLOURS, N, SIZE, index_epochs, jpeg_of, labels_of, make_shards
from tests.helpers.shardkit import write_sample_index
from trainer.data import LOADERS, make_loader, soft_targets, wds_loader
from trainer.data.epoch_plan import assign_shards, emission_order, rank_batches, worker_batches


def as_tensor(im):
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)


def pillow_resize_then_crop(i):
    """Pillow's version of eval_transform: shorter side to SIZE (bilinear, antialiased), center crop."""
    im = Image.open(io.BytesIO(jpeg_of(i)))
    w, h = im.size
    nw, nh = (SIZE, int(SIZE * h / w)) if w < h else (int(SIZE * w / h), SIZE)
    left, top = round((nw - SIZE) / 2), round((nh - SIZE) / 2)
    return as_tensor(im.resize((nw, nh), Image.BILINEAR).crop((left, top, left + SIZE, top + SIZE)))


def pillow_crop_then_resize(i):
    """FFCV's CenterCropRGBImageDecoder(ratio=1): central square, then area resize (~ Pillow's BOX)."""
    im = Image.open(io.BytesIO(jpeg_of(i)))
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return as_tensor(im.crop((left, top, left + s, top + s)).resize((SIZE, SIZE), Image.BOX))


@pytest.fixture
def ffcv_garbage():
    """Collect the FFCV loaders a test leaves behind, now rather than at a random later moment.

    They hold numba dispatchers in reference cycles whose finalizers raise an (ignored) KeyError
    inside numba when the cyclic GC reaches them. When that happens in the middle of an import
    (hypothesis' pytest plugin imports at session end), formatting the ignored error re-enters
    ast.parse, and CPython 3.11's shared AST state fails the outer parse with "SystemError: AST
    constructor recursion depth mismatch" (cpython gh-106905).
    """
    yield
    gc.collect()


def ffcv_test(fn):
    fn = pytest.mark.usefixtures("ffcv_garbage")(fn)
    return pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")(fn)


def soft_target_of(i):
    t = torch.zeros(C)
    t[labels_of(i)] = 1 / len(labels_of(i))
    return t


def check_batch(batch, batch_size, image_of=lambda p: p, center_colour=True):
    """Shapes, dtypes, and image/labels/position of every sample belonging together; image_of maps
    a position to its stored image (identity without a sample index)."""
    images, targets, positions = batch[:3]
    assert images.shape == (batch_size, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert targets.shape == (batch_size, C) and targets.dtype == torch.float32
    assert positions.shape == (batch_size,) and positions.dtype == torch.int64
    for img, target, pos in zip(images, targets, positions.tolist()):
        i = image_of(pos)
        assert 0 <= i < N
        torch.testing.assert_close(target, soft_target_of(i))
        if center_colour:
            colour = img[:, 6:10, 6:10].float().mean((1, 2)).numpy()
            assert np.abs(COLOURS - colour).sum(1).argmin() == i


def test_soft_targets_by_hand():
    labels = torch.tensor([[0, 2, -1], [5, -1, -1], [1, 3, 4]], dtype=torch.int32)
    expected = torch.tensor([[1 / 2, 0, 1 / 2, 0, 0, 0],
                             [0, 0, 0, 0, 0, 1],
                             [0, 1 / 3, 0, 1 / 3, 1 / 3, 0]])
    torch.testing.assert_close(soft_targets(labels, 6), expected)
    for bad in ([[0, 6]], [[-1, -1]], [[2, 2]], [[-2, 1]]):
        with pytest.raises(ValueError):
            soft_targets(torch.tensor(bad), 6)


def test_plan_by_hand():
    # shards of 5, 3, 8, 2, 6, 4 samples, in that order, each to the reader with fewest so far
    assert assign_shards(np.array([5, 3, 8, 2, 6, 4]), np.arange(6), 2) == [[0, 3, 4], [1, 2, 5]]
    # readers g = w * world + r hold 10, 9 (worker 0) and 7, 12 (worker 1) samples, batches of 3:
    # full batches [[3, 3], [2, 4]]; n = min(2 * 3 + 0, 2 * 3 + 0, 2 * 2 + 1, 2 * 4 + 1) = 5
    assert rank_batches(np.array([10, 9, 7, 12]), world_size=2, workers=2, batch_size=3) == 5
    # rank batches 0..6: worker 0 builds 0, 2, 4, 6 (its local 0..3), worker 1 builds 1, 3, 5
    assert list(worker_batches(7, 2, 0)) == [0, 1, 2, 3] and list(worker_batches(7, 2, 1)) == [0, 1, 2]
    # resuming at batch 3: worker 0 goes on with 4, 6 (local 2, 3), worker 1 with 3, 5 (local 1, 2)
    assert list(worker_batches(7, 2, 0, start=3)) == [2, 3] and list(worker_batches(7, 2, 1, start=3)) == [1, 2]
    assert emission_order(5, 3, None).tolist() == [0, 1, 2, 3, 4]


def test_emission_window_bounds_what_is_held():
    # an item is emitted only after every item read more than `buffer` places before it arrives
    rng = np.random.default_rng(0)
    emit = emission_order(10_000, 50, rng)
    assert sorted(emit.tolist()) == list(range(10_000))
    held_max = max(int(r) - k for k, r in enumerate(np.maximum.accumulate(emit)))
    assert 0 < held_max <= 50


def test_eval_reads_every_stored_image_once_in_order(shards8):
    loader = wds_loader(shards8, batch_size=1, rank=0, world_size=1, num_workers=0, train=False, size=SIZE)
    batches = list(loader)
    assert len(loader) == len(batches) == N
    for b in batches:
        check_batch(b, 1)
        expected = pillow_resize_then_crop(b.positions.item())
        assert (b.images[0].int() - expected.int()).abs().max() <= 1
    assert [b.positions.item() for b in batches] == list(range(N))


def test_eval_two_workers_drops_only_the_partial_batches(shards8):
    loader = wds_loader(shards8, batch_size=4, rank=0, world_size=1, num_workers=2, train=False, size=SIZE)
    batches = list(loader)
    # readers hold 21 and 16 images (5 and 4 full batches): n = min(2 * 5 + 0, 2 * 4 + 1) = 9
    assert len(loader) == len(batches) == 9 == N // 4
    seen = [p for b in batches for p in b.positions.tolist()]
    for b in batches:
        check_batch(b, 4)
    assert len(seen) == len(set(seen)) == 36
    assert loader.epoch_stats(0) == {"samples": N, "dropped": 1}


def test_one_reader_epoch_is_exactly_the_index(shards4, indexed):
    samples, epochs = indexed
    for epoch in range(3):  # the third epoch reuses the first index: E = 2
        loader = wds_loader(shards4, batch_size=6, rank=0, world_size=1, num_workers=0, train=True, size=SIZE,
                            sample_index=samples, epoch=epoch, shuffle_buffer=8)
        image_of = epochs[epoch % 2].__getitem__
        batches = list(loader)
        assert len(batches) == 10
        for b in batches:
            check_batch(b, 6, image_of, center_colour=False)  # random crops may miss the centre
        positions = [p for b in batches for p in b.positions.tolist()]
        assert sorted(positions) == list(range(60))  # every sample once: the index's multiset exactly
        assert positions != sorted(positions)


def test_epochs_of_different_lengths_raise_no_length_warning(shards4, tmp_path):
    # a per-epoch index draws another number of samples each epoch; DataLoader caches the len()
    # it saw and warns when an epoch yields more, so set_epoch must refresh it
    import warnings
    epochs = [list(range(37))[:24], [i % 37 for i in range(72)]]
    samples = write_sample_index(shards4, tmp_path / "samples", epochs)
    loader = wds_loader(shards4, batch_size=4, rank=0, world_size=1, num_workers=0, train=True, size=SIZE,
                        sample_index=samples, shuffle_buffer=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(loader) == 6
        got = []
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            got.append(len(list(loader)))  # len() not asked again before iterating
        assert got == [6, 18]


@pytest.mark.parametrize("world_size, workers", [(2, 2), (3, 1)])
def test_ranks_get_equal_batches_and_disjoint_samples(shards4, indexed, world_size, workers):
    samples, epochs = indexed
    batch_size = 3
    for epoch in range(2):
        per_rank = []
        for rank in range(world_size):
            loader = wds_loader(shards4, batch_size=batch_size, rank=rank, world_size=world_size, num_workers=workers,
                                train=True, size=SIZE, epoch=epoch, shuffle_buffer=5, sample_index=samples)
            batches = list(loader)
            n = len(loader)
            assert len(batches) == n
            for b in batches:
                check_batch(b, batch_size, epochs[epoch].__getitem__, center_colour=False)
            per_rank.append([p for b in batches for p in b.positions.tolist()])
        assert len({len(x) for x in per_rank}) == 1  # every rank the same number of batches
        seen = [p for x in per_rank for p in x]
        assert len(seen) == len(set(seen))  # no sample twice, on one rank or across ranks
        stats = loader.epoch_stats(epoch)
        assert stats["samples"] == 60 and stats["dropped"] == 60 - len(seen) < 60 // 2


def test_training_order_is_seeded(shards4, indexed):
    samples, _ = indexed

    def run(seed=0, epoch=0, set_epoch=None, workers=2):
        loader = wds_loader(shards4, batch_size=3, rank=1, world_size=2, num_workers=workers, train=True,
                            size=SIZE, seed=seed, epoch=epoch, shuffle_buffer=5, sample_index=samples)
        if set_epoch is not None:
            loader.set_epoch(set_epoch)
        batches = list(loader)
        return [torch.cat([getattr(b, f) for b in batches]) for f in ("images", "targets", "positions")]

    first = run()
    for a, b in zip(first, run()):
        assert torch.equal(a, b)
    for a, b in zip(run(epoch=1), run(set_epoch=1)):
        assert torch.equal(a, b)
    assert not torch.equal(first[2], run(seed=1)[2])
    assert not torch.equal(first[2], run(epoch=1)[2])
    state = torch.get_rng_state()
    in_process = run(workers=0)
    assert torch.equal(state, torch.get_rng_state())  # in-process reading leaves the global RNG alone
    assert in_process[0].shape == first[0].shape


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly_and_decodes_nothing_before(shards4, indexed, workers):
    samples, _ = indexed
    kw = dict(batch_size=3, rank=0, world_size=1, num_workers=workers, train=True, size=SIZE, shuffle_buffer=6,
              sample_index=samples, epoch=1)
    full = list(wds_loader(shards4, **kw))
    n = len(full)
    for start in (1, n // 2, n - 1):
        loader = wds_loader(shards4, **kw)
        loader.set_epoch(1, start)
        resumed = list(loader)
        assert len(resumed) == n - start
        for a, b in zip(resumed, full[start:]):
            assert torch.equal(a.positions, b.positions) and torch.equal(a.images, b.images)
            assert torch.equal(a.targets, b.targets)
        if workers == 0:  # counted in this process: only the batches after `start` were decoded
            assert loader.dataset.decoded == (n - start) * 3


def test_resume_opens_no_shard_it_has_finished(tmp_path):
    # 37 images once each, read in one reader's order, buffer 1: no shuffling across shards, so a
    # resume near the end must not open the early shards (they are deleted here: opening one fails)
    root = make_shards(tmp_path / "s", 4)
    kw = dict(batch_size=4, rank=0, world_size=1, num_workers=0, train=True, size=SIZE, shuffle_buffer=1)
    loader = wds_loader(root, **kw)
    order = loader.dataset.reader(0, 0).shards.tolist()
    for s in order[:5]:
        (root / shard_name(s)).rename(root / (shard_name(s) + ".moved"))
    loader.dataset.set_epoch(0, 6)  # batch 6 = images 24.. of the reading order, in the 7th shard
    with pytest.raises(ShardError):
        list(wds_loader(root, **kw))  # a fresh loader checks every shard file first
    assert len(list(loader)) == len(loader) - 6


def test_webdataset_library_reads_our_shards(shards8):
    import webdataset as wds

    urls = [str(shards8 / shard_name(s)) for s in range(5)]
    seen = []
    for image, meta in wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "json"):
        i = int(meta["image_id"][2:])
        assert meta["labels"] == labels_of(i)
        w, h = image.size
        colour = np.asarray(image)[h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1].reshape(-1, 3).mean(0)
        assert np.abs(COLOURS - colour).sum(1).argmin() == i
        seen.append(i)
    assert seen == list(range(N))


def test_unfinished_directory_is_refused(tmp_path):
    root = make_shards(tmp_path / "unfinished", 4, n=8)
    (root / "_SUCCESS").unlink()
    for fmt in LOADERS:
        with pytest.raises(ShardError, match="incomplete shards"):
            make_loader(fmt, root, batch_size=2, rank=0, world_size=1, num_workers=0, train=False, size=SIZE)


def test_unknown_format_lists_the_valid_ones(shards8):
    with pytest.raises(ValueError, match="'tfrecord'; valid: ffcv, wds"):
        make_loader("tfrecord", shards8, batch_size=2)


@ffcv_test
def test_ffcv_matches_wds(shards8):
    kw = dict(batch_size=4, rank=0, world_size=1, num_workers=1, train=False, size=SIZE)
    wds = list(make_loader("wds", shards8, **kw))
    ffcv_loader = make_loader("ffcv", shards8, **kw)
    ffcv = [tuple(t.clone() for t in b[:3]) for b in ffcv_loader]  # FFCV reuses its output buffers
    assert len(ffcv_loader) == len(ffcv) == N // 4
    assert [p for b in ffcv for p in b[2].tolist()] == list(range(36))
    wds_by_position = {p: (img, t) for b in wds for img, t, p in zip(b.images, b.targets, b.positions.tolist())}
    for f in ffcv:
        check_batch(f, 4)
        for img, target, pos in zip(*f[:2], f[2].tolist()):
            if pos in wds_by_position:
                w_img, w_t = wds_by_position[pos]
                assert torch.equal(target, w_t)
                # Both show the central square. WDS resizes, then crops (bilinear, antialiased); FFCV crops,
                # then resizes (area), after a second JPEG generation: on these sharp 16-pixel images the
                # two differ by ~10 grey levels on average, mostly at edges.
                assert (img.float() - w_img.float()).abs().mean() < 16
            # the crop geometry is pinned by Pillow's version (crop_ratio=0.95 would give ~7)
            assert (img.float() - pillow_crop_then_resize(pos).float()).abs().mean() < 4


@ffcv_test
def test_ffcv_applies_the_sample_index_and_resumes(tmp_path):
    root = make_shards(tmp_path / "s", 8, ffcv=True)
    epochs = index_epochs(60, 2, seed=1)
    samples = write_sample_index(root, tmp_path / "samples", epochs)
    kw = dict(batch_size=4, world_size=2, num_workers=1, train=True, size=SIZE, sample_index=samples)
    per_rank = []
    for rank in range(2):
        loader = make_loader("ffcv", root, rank=rank, epoch=1, **kw)
        batches = [tuple(t.clone() for t in b[:3]) for b in loader]
        assert len(batches) == len(loader) == 60 // 8
        for b in batches:
            check_batch(b, 4, epochs[1].__getitem__, center_colour=False)
        positions = [p for b in batches for p in b[2].tolist()]
        assert positions == list(range(rank, 56, 2))  # the index's order, rank r taking r, r + 2, ...
        per_rank.append(positions)
        loader.set_epoch(1, 3)
        resumed = [b[2].clone() for b in loader]
        assert torch.cat(resumed).tolist() == positions[12:]
    assert loader.epoch_stats(1) == {"samples": 60, "dropped": 4}


@ffcv_test
def test_ffcv_ranks_must_agree_with_torch_distributed(shards8, tmp_path):
    kw = dict(batch_size=4, num_workers=1, train=False, size=SIZE)
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match=r"disagrees with torch.distributed \(rank 0 of 1\)"):
            make_loader("ffcv", shards8, rank=1, world_size=2, **kw)
        assert len(make_loader("ffcv", shards8, rank=0, world_size=1, **kw)) == N // 4
    finally:
        torch.distributed.destroy_process_group()


def test_missing_ffcv_says_how_to_install_it(shards8, monkeypatch):
    monkeypatch.setitem(sys.modules, "ffcv", None)  # what `import ffcv` meets where it is not installed
    with pytest.raises(ImportError, match=r"`make setup` installs it.*libturbojpeg0-dev"):
        make_loader("ffcv", shards8, batch_size=4, rank=0, world_size=1, num_workers=1, train=False, size=SIZE)
