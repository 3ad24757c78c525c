"""Shard readers (trainer/data) on tiny shard sets written by the real writers.

Sample i has a JPEG whose central square holds COLOURS[i] (see jpeg_of), labels_of(i), and
position_of(i): decoding the colour back gives i, so image, labels and position can be checked
to stay together through sharding, shuffling and batching.
"""
import gc
import io
import json
import sys
import tarfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from pipeline.wds import ShardError, file_sha256, shard_name, write_shard
from trainer.data import LOADERS, make_loader, model_data_config, soft_targets, wds_loader
from trainer.data.wds_reader import plan_epoch

N, C, SIZE = 37, 6, 16
COLOURS = np.array([(30 + 60 * (i % 4), 30 + 60 * (i // 4 % 4), 30 + 60 * (i // 16)) for i in range(N)])


def labels_of(i):
    return [(i + 2 * j) % C for j in range(1 + i % 3)]  # 1-3 distinct labels


def position_of(i):
    return 1000 + 3 * i


def index_of(position):
    return (position - 1000) // 3


def jpeg_of(i):
    """Gray band | white square with COLOURS[i] in its middle | gray band (portrait for odd i)."""
    side, band = 32 + 4 * (i % 3), 8
    img = np.full((side, side + 2 * band, 3), 128, np.uint8)
    img[:, band:band + side] = 255
    img[side // 4:side - side // 4, band + side // 4:band + side - side // 4] = COLOURS[i]
    if i % 2:
        img = img.transpose(1, 0, 2)  # portrait: the bands above and below
    out = io.BytesIO()
    Image.fromarray(img).save(out, "JPEG", quality=95)
    return out.getvalue()


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


def make_shards(root, shard_size, n=N, ffcv=False):
    root.mkdir()
    entries = []
    for s, start in enumerate(range(0, n, shard_size)):
        idx = list(range(start, min(n, start + shard_size)))
        rec = write_shard(root / shard_name(s), [
            (f"{i:09d}", jpeg_of(i), {"image_id": f"img{i}", "labels": labels_of(i), "tail": i % 5 == 0,
                                     "position": position_of(i)}) for i in idx])
        entries.append({"name": shard_name(s), **rec, "first_position": position_of(idx[0]),
                        "last_position": position_of(idx[-1])})
    index = {"num_classes": C, "samples": n, "shard_size": shard_size, "max_side": 320, "shards": entries}
    if ffcv:
        from pipeline.ffcv_writer import write_beton

        index["ffcv"] = write_beton([str(root / e["name"]) for e in entries], str(root / "samples.beton"),
                                    label_pad=3, quality=95, num_workers=1)
    (root / "shards.json").write_text(json.dumps(index))
    (root / "_SUCCESS").write_text("")
    return root


def add_member(root, shard, name, data):
    """Append a member to a finished shard and keep shards.json's byte count true."""
    path = root / shard_name(shard)
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    index = json.loads((root / "shards.json").read_text())
    index["shards"][shard].update(bytes=path.stat().st_size, sha256=file_sha256(path))
    (root / "shards.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def shards8(tmp_path_factory):  # 5 shards: 4 x 8 + 5, with the FFCV file
    return make_shards(tmp_path_factory.mktemp("readers") / "s8", 8, ffcv=True)


@pytest.fixture(scope="module")
def shards4(tmp_path_factory):  # 10 shards: 9 x 4 + 1
    return make_shards(tmp_path_factory.mktemp("readers") / "s4", 4)


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


def check_batch(batch, batch_size, center_colour=True):
    """Shapes, dtypes, and image/labels/position of every sample belonging together."""
    images, targets, positions = batch
    assert images.shape == (batch_size, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert targets.shape == (batch_size, C) and targets.dtype == torch.float32
    assert positions.shape == (batch_size,) and positions.dtype == torch.int64
    for img, target, pos in zip(images, targets, positions.tolist()):
        i = index_of(pos)
        assert 0 <= i < N and position_of(i) == pos
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
    # 10 shards (9 x 4 + 1), 3 ranks x 2 workers: shard i -> global worker g = i % 6 = worker * 3 + rank.
    # 37 // (3 * 3) = 4 batches per rank, split in proportion to the workers' samples (largest remainder):
    # rank 0 holds 8 + 5 samples -> 4*8/13 = 2.46, 4*5/13 = 1.54 -> 2 + 2; ranks 1, 2: 8 + 4 -> 3 + 1.
    plan = plan_epoch([4] * 9 + [1], list(range(10)), world_size=3, workers=2, batch_size=3)
    assert plan == [[([0, 6], 2), ([3, 9], 2)], [([1, 7], 3), ([4], 1)], [([2, 8], 3), ([5], 1)]]


def test_eval_reads_every_sample_in_order(shards8):
    loader = wds_loader(shards8, batch_size=1, rank=0, world_size=1, num_workers=0, train=False, size=SIZE)
    batches = list(loader)
    assert len(loader) == len(batches) == N
    for b in batches:
        check_batch(b, 1)
        expected = pillow_resize_then_crop(index_of(b.positions.item()))
        assert (b.images[0].int() - expected.int()).abs().max() <= 1
    assert [b.positions.item() for b in batches] == [position_of(i) for i in range(N)]


def test_eval_two_workers_drops_only_the_partial_batch(shards8):
    loader = wds_loader(shards8, batch_size=4, rank=0, world_size=1, num_workers=2, train=False, size=SIZE)
    batches = list(loader)
    assert len(loader) == len(batches) == N // 4
    seen = [p for b in batches for p in b.positions.tolist()]
    for b in batches:
        check_batch(b, 4)
    # worker 0 reads shards 0, 2, 4 (21 samples), worker 1 shards 1, 3 (16): 9 batches split 5 + 4
    assert len(seen) == len(set(seen)) == 36


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_equal_batches_and_disjoint_shards(shards4, world_size):
    batch_size, workers, epochs = 3, 2, 4
    expected_batches = N // (world_size * batch_size)
    covered = set()
    for epoch in range(epochs):
        per_rank = []
        for rank in range(world_size):
            loader = wds_loader(shards4, batch_size=batch_size, rank=rank, world_size=world_size,
                                num_workers=workers, train=True, size=SIZE, epoch=epoch, shuffle_buffer=5)
            batches = list(loader)
            assert len(loader) == len(batches) == expected_batches
            for b in batches:
                check_batch(b, batch_size, center_colour=False)  # random crops may miss the centre
            seen = [index_of(p) for b in batches for p in b.positions.tolist()]
            # the rank reads only its shards, and repeats a sample only where a worker had too few
            plan = loader.dataset.plan(epoch)[rank]
            own = {i for shards, _ in plan for s in shards for i in range(4 * s, min(N, 4 * s + 4))}
            assert set(seen) <= own
            assert len(set(seen)) == sum(min(sum(min(4, N - 4 * s) for s in shards), q * batch_size)
                                         for shards, q in plan)
            per_rank.append(set(seen))
        assert sum(len(s) for s in per_rank) == len(set().union(*per_rank))  # ranks are disjoint
        covered |= set().union(*per_rank)
    assert covered == set(range(N))  # reshuffled shard orders reach every sample within a few epochs


def test_too_few_shards_for_ranks_and_workers(shards8):
    with pytest.raises(ValueError, match=r"5 shards .* 3 ranks x 2 loader workers = 6"):
        wds_loader(shards8, batch_size=2, rank=0, world_size=3, num_workers=2, train=True, size=SIZE)
    with pytest.raises(ValueError, match="no full batch"):
        wds_loader(shards8, batch_size=10, rank=0, world_size=4, num_workers=0, train=True, size=SIZE)
    with pytest.raises(ValueError, match="rank 2 outside"):
        wds_loader(shards8, batch_size=2, rank=2, world_size=2, num_workers=0, train=True, size=SIZE)


def test_training_order_is_seeded(shards4):
    def run(seed=0, epoch=0, set_epoch=None, workers=2):
        loader = wds_loader(shards4, batch_size=3, rank=1, world_size=2, num_workers=workers, train=True,
                            size=SIZE, seed=seed, epoch=epoch, shuffle_buffer=5)
        if set_epoch is not None:
            loader.set_epoch(set_epoch)
        batches = list(loader)
        return [torch.cat([getattr(b, f) for b in batches]) for f in ("images", "targets", "positions")]

    first = run()
    for a, b in zip(first, run()):
        assert torch.equal(a, b)
    for a, b in zip(run(epoch=1), run(set_epoch=1)):
        assert torch.equal(a, b)
    assert not torch.equal(first[2], run(epoch=1)[2])
    assert not torch.equal(first[2], run(seed=1)[2])
    # in-process reading (no workers) leaves the trainer's global RNG alone
    state = torch.get_rng_state()
    in_process = run(workers=0)
    assert torch.equal(state, torch.get_rng_state())
    assert in_process[0].shape == first[0].shape


@pytest.mark.parametrize("name, workers", [("000000005.pyd", 2), ("../evil.jpg", 0)])
def test_unsafe_members_are_refused(tmp_path, name, workers):
    root = make_shards(tmp_path / "bad", 4, n=8)
    add_member(root, 1, name, b"not for reading")
    loader = wds_loader(root, batch_size=1, rank=0, world_size=1, num_workers=workers, train=False, size=SIZE)
    with pytest.raises(ShardError, match=r"shard-000001\.tar"):
        list(loader)


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
    ffcv = [tuple(t.clone() for t in b) for b in ffcv_loader]  # FFCV reuses its output buffers
    assert len(ffcv_loader) == len(ffcv) == len(wds) == N // 4
    for f, w in zip(ffcv, wds):
        check_batch(f, 4)
        assert torch.equal(f[2], w.positions)
        assert torch.equal(f[1], w.targets)
        # Both show the central square. WDS resizes, then crops (bilinear, antialiased); FFCV crops,
        # then resizes (area), after a second JPEG generation: on these sharp 16-pixel images the
        # two differ by ~10 grey levels on average, mostly at edges.
        assert (f[0].float() - w.images.float()).abs().mean() < 16
        # the crop geometry is pinned by Pillow's version (crop_ratio=0.95 would give ~7)
        for img, pos in zip(f[0], f[2].tolist()):
            assert (img.float() - pillow_crop_then_resize(index_of(pos)).float()).abs().mean() < 4


@ffcv_test
def test_ffcv_training_pipeline(shards8):
    loader = make_loader("ffcv", shards8, batch_size=4, rank=0, world_size=1, num_workers=1, train=True,
                         size=SIZE, seed=3)
    batches = [tuple(t.clone() for t in b) for b in loader]
    assert len(batches) == len(loader) == N // 4
    for b in batches:
        check_batch(b, 4, center_colour=False)
    positions = torch.cat([b[2] for b in batches])
    assert len(set(positions.tolist())) == 36 and not torch.equal(positions, positions.sort().values)


@ffcv_test
def test_ffcv_ranks_must_agree_with_torch_distributed(shards8, tmp_path):
    kw = dict(batch_size=4, num_workers=1, train=False, size=SIZE)
    with pytest.raises(RuntimeError, match="init_process_group"):
        make_loader("ffcv", shards8, rank=0, world_size=2, **kw)
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match=r"disagrees with torch.distributed \(rank 0 of 1\)"):
            make_loader("ffcv", shards8, rank=1, world_size=2, **kw)
        assert len(make_loader("ffcv", shards8, rank=0, world_size=1, **kw)) == N // 4
    finally:
        torch.distributed.destroy_process_group()


def test_model_data_config_from_timm():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = model_data_config("resnet18")
    assert (cfg.mean, cfg.std, cfg.input_size) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 224)
    assert model_data_config("vit_base_patch16_384").mean == (0.5, 0.5, 0.5)
    assert model_data_config("vit_base_patch16_384").input_size == 384


def test_missing_ffcv_says_how_to_install_it(shards8, monkeypatch):
    monkeypatch.setitem(sys.modules, "ffcv", None)  # what `import ffcv` meets where it is not installed
    with pytest.raises(ImportError, match=r"`make setup` installs it.*libturbojpeg0-dev"):
        make_loader("ffcv", shards8, batch_size=4, rank=0, world_size=1, num_workers=1, train=False, size=SIZE)


def _ffcv_rank(rank, world_size, root, init_file, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world_size)
    try:
        loader = make_loader("ffcv", root, batch_size=4, rank=rank, world_size=world_size, num_workers=1,
                             train=True, size=SIZE)
        results.put((rank, len(loader), [p for b in loader for p in b.positions.tolist()]))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ffcv_distributed_ranks_get_equal_batches(shards8, tmp_path):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_ffcv_rank, args=(r, 2, str(shards8), str(tmp_path / "init"), results))
             for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # DistributedSampler pads 37 to 38 = 2 x 19 by repeating one sample; the Loader drops the partial batch
    assert [n for _, n, _ in got] == [19 // 4] * 2
    seen = [set(positions) for _, _, positions in got]
    assert all(len(positions) == 16 for _, _, positions in got)
    assert len(seen[0] & seen[1]) <= 1 and seen[0] | seen[1] <= {position_of(i) for i in range(N)}
