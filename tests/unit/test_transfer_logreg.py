"""The linear-probe classifier against scikit-learn, and the seeded splits of the probes."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from transfer.few_shot import draw
from transfer.logreg import fit, holdout_split, mean_class_accuracy, select_and_fit, top_k


def problem(n=150, d=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, (c, d))
    y = rng.integers(0, c, n)
    x = centers[y] + rng.normal(0, 1.0, (n, d))
    return x, y


@pytest.mark.parametrize("C", [0.05, 1.0, 20.0])
def test_matches_sklearn_multinomial_l2(C):
    x, y = problem()
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(x, y)
    w, b = fit(torch.from_numpy(x), torch.from_numpy(y), 4, lam=1.0 / (C * len(y)), tol=1e-10, max_iter=2000)
    np.testing.assert_allclose(w.numpy(), ref.coef_, atol=2e-4)
    # softmax ignores a common shift of the intercepts; compare them centred
    np.testing.assert_allclose(b.numpy() - b.numpy().mean(), ref.intercept_ - ref.intercept_.mean(), atol=2e-4)
    ours = torch.softmax(torch.from_numpy(x) @ w.T + b, 1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(x), atol=1e-5)


def test_selection_picks_the_best_holdout_lam_as_sklearn_sees_it():
    from sklearn.preprocessing import StandardScaler

    x, y = problem(n=120, d=30, c=3, seed=2)
    x[:, 3:] = np.random.default_rng(5).normal(size=(120, 27)) * 3  # mostly noise: regularisation matters
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lams = (1e-4, 1e-2, 1.0)
    _, info = select_and_fit(xt, yt, 3, lams=lams, holdout_frac=0.25, seed=4)
    tr, ho = (i.numpy() for i in holdout_split(yt, 0.25, seed=4))
    scaler = StandardScaler().fit(x[tr])
    expected = {}
    for lam in lams:
        ref = LogisticRegression(C=1.0 / (lam * len(tr)), tol=1e-10, max_iter=10000).fit(scaler.transform(x[tr]), y[tr])
        expected[f"{lam:g}"] = float((ref.predict(scaler.transform(x[ho])) == y[ho]).mean())
    assert info["holdout_images"] == len(ho) and info["holdout_top1"] == pytest.approx(expected)
    best = max(expected.values())
    assert info["lam"] == max(lam for lam in lams if expected[f"{lam:g}"] == best)


def test_holdout_split_is_stratified_and_keeps_every_class():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    tr, ho = holdout_split(y, 0.2, seed=3)
    assert sorted(tr.tolist() + ho.tolist()) == list(range(16))
    assert [int((y[ho] == c).sum()) for c in range(3)] == [2, 1, 0]
    assert set(y[tr].tolist()) == {0, 1, 2}
    assert torch.equal(holdout_split(y, 0.2, seed=3)[1], ho)


def test_accuracies_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1]])
    y = torch.tensor([0, 1, 1, 1])
    assert top_k(scores, y, 1) == 0.5            # rows 0 and 2
    assert top_k(scores, y, 2) == 1.0
    assert mean_class_accuracy(scores, y) == pytest.approx((1.0 + 1 / 3) / 2)


def test_few_shot_draw_caps_small_classes():
    y = torch.tensor([0] * 30 + [1] * 3 + [2] * 10)
    idx, capped = draw(y, 5, seed=0)
    assert [int((y[idx] == c).sum()) for c in range(3)] == [5, 3, 5]
    assert capped == 1
    assert torch.equal(draw(y, 5, seed=0)[0], idx) and not torch.equal(draw(y, 5, seed=1)[0], idx)
