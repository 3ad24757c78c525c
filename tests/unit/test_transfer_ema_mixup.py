"""EMA of weights and mixup, against values worked out by hand."""
import numpy as np
import pytest
import torch
from torch import nn

from transfer.ema import ModelEma
from transfer.mixup import mix, one_hot, sample_lambda


def test_ema_with_warmup_by_hand():
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = ModelEma(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(3.0)
    ema.update(m)  # d = min(0.9, 1/10) = 0.1: 0.1 * 1 + 0.9 * 3
    assert ema.module.weight.item() == pytest.approx(2.8)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema.update(m)  # d = min(0.9, 2/11): 2.8 * 2/11
    assert ema.module.weight.item() == pytest.approx(2.8 * 2 / 11)
    for _ in range(100):  # later d = 0.9, the cap
        ema.update(m)
    assert ema.current_decay() == 0.9
    assert not ema.module.weight.requires_grad and m.weight.item() == 0.0  # the model is untouched


def test_ema_without_warmup_and_buffers():
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEma(m, decay=0.5, warmup=False)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    m(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # moves BN running stats, counts one batch
    ema.update(m)
    s, e = m.state_dict(), ema.module.state_dict()
    torch.testing.assert_close(e["1.running_mean"], 0.5 * start["1.running_mean"] + 0.5 * s["1.running_mean"])
    assert e["1.num_batches_tracked"].item() == 1  # integer buffers are copied, not averaged
    torch.testing.assert_close(e["0.weight"], s["0.weight"])  # weights did not change: average of equals


def test_mixup_by_hand():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    t = one_hot(torch.tensor([0, 1, 2]), 3)
    xm, tm = mix(x, t, 0.75)
    torch.testing.assert_close(xm, torch.tensor([[1.75], [2.0], [3.25]]))
    torch.testing.assert_close(tm, torch.tensor([[0.75, 0, 0.25], [0, 1.0, 0], [0.25, 0, 0.75]]))
    torch.testing.assert_close(tm.sum(1), torch.ones(3))


def test_mixup_lambda_distribution():
    assert sample_lambda(0.0, np.random.default_rng(0)) == 1.0
    rng = np.random.default_rng(0)
    lam = np.array([sample_lambda(0.1, rng) for _ in range(20000)])
    # Beta(0.1, 0.1) is symmetric and U-shaped: mean 1/2, most mass near 0 and 1
    assert abs(lam.mean() - 0.5) < 0.02
    assert ((lam > 0.1) & (lam < 0.9)).mean() < 0.25
    with pytest.raises(ValueError):
        sample_lambda(-1.0, rng)
