"""SwAV's parts on plain values: Sinkhorn-Knopp against Algorithm 1 written out in numpy (and
under 2 gloo processes against one process on the concatenated batch), the swapped-prediction
loss against a hand computation, the multi-crop views through the real WebDataset reader, the
head's export, and the configs refused before any work."""
import math
import textwrap

import numpy as np
import pytest
import torch

from tests.helpers.launch import torchrun
from tests.helpers.ranks import unit_scores
from tests.helpers.shardkit import make_shards
from trainer.data.multicrop import MultiCrop, MultiCropSpec
from trainer.swav.loss import swapped_prediction
from trainer.swav.sinkhorn import sinkhorn


def sinkhorn_numpy(scores: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """Caron et al. 2020, Algorithm 1 (in float64): Q = exp(S / eps)^T, alternately make each
    prototype's row sum 1/K and each sample's column 1/B, then scale columns to 1."""
    q = np.exp(scores / eps).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def test_sinkhorn_matches_algorithm_1_and_its_marginals():
    s = unit_scores(48, 12, 0)
    for iters in (1, 3, 10):
        got = sinkhorn(s, 0.05, iters).double().numpy()
        np.testing.assert_allclose(got, sinkhorn_numpy(s.double().numpy(), 0.05, iters), rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)  # each sample's code sums to 1, exactly
    converged = sinkhorn(s, 0.05, 200).double().numpy()
    np.testing.assert_allclose(converged.sum(axis=0), 48 / 12, rtol=1e-3)  # equipartition: B/K per prototype
    off = [np.abs(sinkhorn(s, 0.05, n).double().numpy().sum(axis=0) - 4).max() for n in (1, 3)]
    assert off[1] < off[0]  # each iteration brings the prototypes' shares nearer B/K


def test_sinkhorn_survives_a_small_epsilon():
    s = unit_scores(32, 8, 1)
    with np.errstate(over="ignore", invalid="ignore"):  # the reference in float32: exp(0.54 / 0.005) overflows
        assert not np.isfinite(sinkhorn_numpy(s.numpy().astype(np.float32), 0.005, 3)).all()
    q = sinkhorn(s, 0.005, 3)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(32), atol=1e-4)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(s, 0.0)
    with pytest.raises(ValueError, match=r"\[B >= 1, K >= 2\]"):
        sinkhorn(s[:, :1])


@pytest.mark.multiprocess
def test_sinkhorn_over_two_gloo_processes_equals_the_concatenated_batch(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent("""
        import sys, torch, torch.distributed as dist
        from tests.helpers.ranks import unit_scores
        from trainer.distributed import cleanup_distributed
        from trainer.swav.sinkhorn import sinkhorn
        dist.init_process_group("gloo")
        r = dist.get_rank()
        s = unit_scores(40, 10, 2)
        mine = s[:25] if r == 0 else s[25:]  # unequal shares of the global batch
        torch.save(sinkhorn(mine, 0.05, 3), sys.argv[1] + f"/q{r}.pt")
        cleanup_distributed()
    """))
    r = torchrun(2, [str(script), str(tmp_path)], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.cat([torch.load(tmp_path / f"q{i}.pt", weights_only=True) for i in (0, 1)])
    whole = sinkhorn(unit_scores(40, 10, 2), 0.05, 3)
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-7)
    halves = torch.cat([sinkhorn(unit_scores(40, 10, 2)[:25]), sinkhorn(unit_scores(40, 10, 2)[25:])])
    assert (halves - whole).abs().max() > 1e-3  # the test can tell a per-rank constraint from the global one


def test_swapped_prediction_against_a_hand_computation():
    b, views, k, tau = 2, 3, 3, 0.1
    s = unit_scores(views * b, k, 3)
    hand = 0.0
    for i in (0, 1):
        q = sinkhorn_numpy(s[i * b:(i + 1) * b].double().numpy(), 0.05, 3)
        sub = 0.0
        for v in range(views):
            if v == i:
                continue
            for n in range(b):
                logits = [s[v * b + n, j].item() / tau for j in range(k)]
                log_z = math.log(sum(math.exp(x) for x in logits))
                sub -= sum(q[n, j] * (logits[j] - log_z) for j in range(k)) / b
        hand += sub / (views - 1)
    hand /= 2
    assert swapped_prediction(s, b, views, (0, 1), tau).item() == pytest.approx(hand, rel=1e-5)
    # with a queue the codes are computed over queue + batch: they differ, and so does the loss
    queued = swapped_prediction(s, b, views, (0, 1), tau, queue_scores=[unit_scores(8, k, 4), unit_scores(8, k, 5)])
    assert abs(queued.item() - hand) > 1e-4
    with pytest.raises(ValueError, match="views x batch"):
        swapped_prediction(s, 4, views)


def test_swapped_prediction_gradient_reaches_only_the_predicting_views():
    s = unit_scores(3 * 4, 5, 6).requires_grad_()
    swapped_prediction(s, 4, 3, (0,)).backward()
    g = s.grad.abs().sum(dim=1)
    assert g[:4].sum() == 0 and (g[4:] > 0).all()  # view 0 only assigns (its codes are detached)


def test_multicrop_views_shapes_counts_and_determinism(tmp_path):
    from trainer.data import make_loader

    spec = MultiCropSpec(global_crops=2, global_size=32, local_crops=3, local_size=16)
    views = MultiCrop(spec)(torch.randint(0, 255, (3, 50, 60), dtype=torch.uint8))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == torch.uint8 for v in views) and spec.sizes == [32, 32, 16, 16, 16]
    shards = make_shards(tmp_path / "s", n=32, shard_size=8, size=40)
    loader = make_loader("wds", shards, batch_size=8, rank=0, world_size=1, num_workers=0, train=True, size=32,
                         seed=1, transform=MultiCrop(spec))
    loader.set_epoch(0)
    first = next(iter(loader)).images
    assert isinstance(first, (tuple, list))  # DataLoader hands tuples on as lists
    assert [tuple(v.shape) for v in first] == [(8, 3, 32, 32)] * 2 + [(8, 3, 16, 16)] * 3
    assert not torch.equal(first[0], first[1])  # two draws of the same images
    loader.set_epoch(0)
    again = next(iter(loader)).images
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # seeded per batch
    with pytest.raises(ValueError, match="data_format=wds"):
        make_loader("ffcv", shards, batch_size=8, rank=0, world_size=1, num_workers=0, train=True, size=32,
                    transform=MultiCrop(spec))


def test_multicrop_spec_refuses_bad_views():
    for kw, message in (({"global_crops": 1}, "global_crops must be >= 2"), ({"local_scale": (0.5, 0.1)}, "local_scale"),
                        ({"blur_p": 2.0}, "blur_p"), ({"local_size": 4}, "sides")):
        with pytest.raises(ValueError, match=message):
            MultiCropSpec(**kw)


def test_swav_export_round_trip_and_protocols(tmp_path):
    from trainer.export import export_model, load_exported, load_model
    from trainer.swav.model import create_swav

    torch.manual_seed(0)
    model = create_swav("regnety_002", 12, 32, {"hidden": 24, "dim": 8})
    z, s = model([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3, 16, 16)])
    assert z.shape == (12, 8) and s.shape == (12, 12)
    torch.testing.assert_close(model.head.prototypes.weight.norm(dim=1), torch.ones(12))
    export_model(model, tmp_path / "export", {"model": "regnety_002", "head": "swav", "num_classes": 12,
                                              "labels": [], "head_args": {"hidden": 24, "dim": 8}, "img_size": 32})
    back, meta = load_exported(tmp_path / "export")
    assert meta["head"] == "swav" and meta["head_args"] == {"hidden": 24, "dim": 8}
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    loaded = load_model(str(tmp_path / "export"))  # what linear probe, few-shot and finetune load
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(loaded.trunk.eval()(x), model.trunk(x))
    from transfer.zero_shot import ZeroShotConfig
    from transfer.zero_shot import run as zero_shot

    with pytest.raises(ValueError, match="prototypes, not hashtags"):  # before any data is read
        zero_shot(ZeroShotConfig(model=str(tmp_path / "export"), data=str(tmp_path / "none"),
                                 out=str(tmp_path / "z.json")))
