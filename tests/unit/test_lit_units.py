"""trainer.lit's parts on plain values: the tokenizer, the text tower, the contrastive loss (by
hand, and over two gloo processes against one), the pair loader's order."""
import math
import textwrap
import unicodedata

import numpy as np
import pytest
import torch

from tests.helpers.launch import torchrun
from tests.helpers.ranks import batch, tower
from trainer.lit.loss import symmetric_infonce
from trainer.lit.pairs import PairLoader, PairStore
from trainer.lit.text_tower import TextTowerSpec
from trainer.lit.tokenizer import EOS_ID, PAD_ID, decode, encode, load_tokenizer, save_tokenizer, train_tokenizer

TEXTS = ["A red apple on a table", "Two cats, one mat", "Café au lait & croissant", "Ein Straßenschild",
         "a map of the world", "école primaire", "tools: hammer; saw", "日本の地図"] * 5


def test_tokenizer_round_trip_truncation_and_saved_identity(tmp_path):
    tok = train_tokenizer(TEXTS, 400)
    rows = encode(tok, TEXTS[:8], 64)
    for text, row in zip(TEXTS, rows):
        assert decode(tok, row) == unicodedata.normalize("NFKC", text).lower()  # byte-level: nothing lost
        n = int((row != PAD_ID).sum())
        assert row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all() and EOS_ID not in row[:n - 1]
    short = encode(tok, ["a map of the world and of the moon and of the stars"], 4)[0]
    assert short[3] == EOS_ID and PAD_ID not in short  # cut to 3 tokens + <eos>
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.to_str() == tok.to_str()
    unseen = ["a zebra crossing", "Übermäßig große Käse", "🙂 emoji"]
    assert (encode(again, unseen, 16) == encode(tok, unseen, 16)).all()
    (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(ValueError, match="bad.json: not a tokenizers JSON"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="vocab_size must be >= 259"):
        train_tokenizer(TEXTS, 100)


def test_symmetric_infonce_against_a_hand_computation():
    images = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    texts = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    t = 10.0
    s = [[1 * 0.8, 0.0], [0.6 * 0.8 + 0.8 * 0.6, 0.8]]  # cosines, written out
    i2t = [-(t * s[i][i]) + math.log(sum(math.exp(t * s[i][j]) for j in range(2))) for i in range(2)]
    t2i = [-(t * s[j][j]) + math.log(sum(math.exp(t * s[i][j]) for i in range(2))) for j in range(2)]
    want = 0.5 * (sum(i2t) / 2 + sum(t2i) / 2)
    got = symmetric_infonce(images, texts, torch.tensor(t)).item()
    assert got == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="pair row by row"):
        symmetric_infonce(images, texts[:1], torch.tensor(t))


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_text_tower_ignores_padding_and_pools_as_documented(pooling):
    t = tower(pooling, context=12).eval()
    rows = torch.tensor([[5, 9, 7, EOS_ID, 0, 0, 0, 0], [11, EOS_ID, 0, 0, 0, 0, 0, 0]])
    longer = torch.cat([rows, torch.zeros(2, 4, dtype=rows.dtype)], 1)
    with torch.no_grad():
        e, temp = t(rows)
        torch.testing.assert_close(t.embed(longer), e, rtol=1e-5, atol=1e-6)  # more <pad> changes nothing
        assert torch.allclose(e.norm(dim=1), torch.ones(2)) and float(temp) == pytest.approx(10.0)
        other = rows.clone()
        other[0, 4:] = torch.tensor([3, 3, 3, 3])  # real tokens after <eos>: no longer padding
        assert not torch.allclose(t.embed(other)[0], e[0], atol=1e-4)
    with pytest.raises(ValueError, match="exceed the context length 12"):
        t.embed(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown pooling"):
        TextTowerSpec(50, 8, 32, 2, 4, 2.0, 12, "max")


def test_temperature_is_capped_and_learned():
    t = tower()
    with torch.no_grad():
        t.log_temperature.fill_(math.log(1000.0))
    assert float(t.temperature().detach()) == pytest.approx(100.0)
    t = tower()
    loss = symmetric_infonce(torch.nn.functional.normalize(torch.randn(4, 12), dim=1),
                             t.embed(torch.randint(3, 50, (4, 8))), t.temperature())
    loss.backward()
    assert t.log_temperature.grad is not None and t.log_temperature.grad.abs() > 0


@pytest.mark.multiprocess
def test_two_gloo_processes_give_the_one_process_gradient(tmp_path):
    """DDP over 2 ranks, each its half of the texts, all-gathered with gradient = one process on
    the whole batch; gathering without the gradient's all-reduce (each rank's own rows only) gives
    half the text tower's gradient, which the comparison can tell."""
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP
        from tests.helpers.ranks import tower, batch
        from trainer.distributed import cleanup_distributed
        from trainer.lit.loss import gather_rows, symmetric_infonce
        dist.init_process_group("gloo")
        r = dist.get_rank()
        images, tokens = batch()
        for variant in ("gather_rows", "no_grad_gather"):
            net = DDP(tower())
            text, t = net(tokens[r * 3:(r + 1) * 3])
            if variant == "gather_rows":
                all_text = gather_rows(text)
            else:
                parts = [torch.empty_like(text) for _ in range(2)]
                dist.all_gather(parts, text.detach())
                parts[r] = text
                all_text = torch.cat(parts)
            loss = symmetric_infonce(images, all_text, t)
            loss.backward()
            if r == 0:
                torch.save({"loss": loss.detach(), **{k: p.grad for k, p in net.module.named_parameters()}},
                           sys.argv[1] + f"/{variant}.pt")
            del net  # the product's teardown: DDP wrappers freed, then barrier, then destroy
        cleanup_distributed()
    """))
    r = torchrun(2, [str(script), str(tmp_path)], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    whole = tower()
    images, tokens = batch()
    text, t = whole(tokens)
    loss = symmetric_infonce(images, text, t)
    loss.backward()
    got = torch.load(tmp_path / "gather_rows.pt", weights_only=True)
    naive = torch.load(tmp_path / "no_grad_gather.pt", weights_only=True)
    assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    for k, p in whole.named_parameters():
        torch.testing.assert_close(got[k], p.grad, rtol=1e-4, atol=1e-6)
    g = whole.proj.weight.grad
    assert (naive["proj.weight"] - g).abs().max() > 0.1 * g.abs().max()


def store(tmp_path, n=50, files=3):
    """A PairStore of n pairs over `files` files of .npy, as trainer/lit/pairs.py writes them."""
    rng = np.random.default_rng(0)
    sizes = [n // files + (i < n % files) for i in range(files)]
    stems = [tmp_path / f"shard-{i:06d}" for i in range(files)]
    for stem, size in zip(stems, sizes):
        np.save(f"{stem}.image.npy", rng.normal(size=(size, 4)).astype(np.float32))
        np.save(f"{stem}.tokens.npy", rng.integers(3, 99, (size, 5)).astype(np.int32))
    return PairStore(stems, sizes, {}, max_open=2)


def all_tokens(s):
    return np.concatenate([np.load(f"{stem}.tokens.npy") for stem in s.stems])


def test_pair_loader_order_is_the_same_on_any_world_size_and_resumes_mid_epoch(tmp_path):
    s = store(tmp_path)
    one = PairLoader(s, 8, 0, 1, seed=5)
    assert one.epoch_batches(0) == 6  # 50 // 8, the last 2 dropped
    full = list(one)
    perm = one.order(0)
    assert sorted(perm.tolist()) == list(range(50))
    k = 2  # batch 2 holds pairs perm[16:24]: their rows from the files, looked up by hand
    want = all_tokens(s)[perm[16:24]]
    assert (full[k].tokens.numpy() == want).all()
    two = [PairLoader(s, 8, r, 2, seed=5) for r in (0, 1)]
    for b_one, b0, b1 in zip(full, *two):
        assert torch.equal(b_one.images, b0.images) and torch.equal(b0.images, b1.images)
        assert torch.equal(torch.cat([b0.tokens, b1.tokens]), b_one.tokens)
    one.set_epoch(0, 4)
    resumed = list(one)
    assert len(resumed) == 2 and all(torch.equal(a.tokens, b.tokens) for a, b in zip(resumed, full[4:]))
    one.set_epoch(1)
    assert not torch.equal(next(iter(one)).tokens, full[0].tokens)  # each epoch its own order
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        PairLoader(s, 8, 0, 3, seed=5)


def test_shuffle_windows_bound_the_files_a_batch_reads_and_resume_across_windows(tmp_path):
    s = store(tmp_path, n=60, files=6)  # 10 pairs a file, windows of 2 files
    loader = PairLoader(s, 5, 0, 1, seed=1, shuffle_window=2)
    perm = loader.order(0)
    assert sorted(perm.tolist()) == list(range(60))
    file_of = np.searchsorted(s.offsets, perm, side="right") - 1
    windows = [set(file_of[i:i + 20].tolist()) for i in range(0, 60, 20)]
    assert all(len(w) == 2 for w in windows) and set().union(*windows) == set(range(6))
    batches = list(loader)
    assert [b.positions.tolist() for b in batches] == [perm[i:i + 5].tolist() for i in range(0, 60, 5)]
    assert (torch.cat([b.tokens for b in batches]).numpy() == all_tokens(s)[perm]).all()
    loader.set_epoch(0, 5)  # batch 5 starts in the middle of the second window
    assert [b.positions.tolist() for b in loader] == [b.positions.tolist() for b in batches[5:]]
    assert len(s._open) <= 2  # files closed least recently used first
    with pytest.raises(ValueError, match="shuffle_window must be >= 1"):
        PairLoader(s, 5, 0, 1, seed=1, shuffle_window=0)
