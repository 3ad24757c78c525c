"""L2-regularised multinomial logistic regression in torch (the linear-probe classifier).

Objective: mean cross-entropy + lam/2 * ||W||^2 (bias not penalised), minimised by full-batch
L-BFGS in float64. It is scikit-learn's LogisticRegression(C) with lam = 1 / (C * n).
The regularisation is chosen on a stratified, seeded split of the training set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_LAMS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class LinearModel:
    weight: torch.Tensor   # [C, D]
    bias: torch.Tensor     # [C]
    mean: torch.Tensor     # feature standardisation fitted on the training features
    std: torch.Tensor
    lam: float

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mean) / self.std
        return z @ self.weight.T + self.bias


def fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float, max_iter: int = 500,
        tol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [C, D], b [C]) minimising mean CE + lam/2 ||W||^2 on (x, y); no standardisation.

    Small problems run on one thread: on a busy machine, intra-op threads make each of L-BFGS's
    many tiny steps ten times slower (measured on 2 cores)."""
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    threads = torch.get_num_threads()
    if x.numel() * num_classes < 5e7:
        torch.set_num_threads(1)
    try:
        return _lbfgs(x, y, num_classes, lam, max_iter, tol)
    finally:
        torch.set_num_threads(threads)


def _lbfgs(x, y, num_classes, lam, max_iter, tol):
    x, y = x.double(), y.long()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol * 1e-3,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)


def fit_standardised(x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float) -> LinearModel:
    mean, std = standardiser(x)
    w, b = fit((x.double() - mean) / std, y, num_classes, lam)
    return LinearModel(w, b, mean, std, lam)


def holdout_split(y: torch.Tensor, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train_idx, holdout_idx): floor(frac * n_c) of each class held out, at least one
    image of every class kept for training (a class with one image is never held out)."""
    rng = np.random.default_rng(seed)
    yy = y.numpy()
    train, hold = [], []
    for c in np.unique(yy):
        idx = rng.permutation(np.flatnonzero(yy == c))
        k = min(len(idx) - 1, math.floor(frac * len(idx)))
        hold.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return torch.tensor(sorted(train), dtype=torch.long), torch.tensor(sorted(hold), dtype=torch.long)


def select_and_fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, lams=DEFAULT_LAMS, holdout_frac: float = 0.2,
                   seed: int = 0, default_lam: float = 1e-3) -> tuple[LinearModel, dict]:
    """Pick lam by accuracy on a held-out share of (x, y) (ties: the larger lam), refit on all of it.
    Without any held-out image (every class has one image) lam = default_lam."""
    tr, ho = holdout_split(y, holdout_frac, seed)
    search = {}
    if len(ho) > 0:
        for lam in lams:
            m = fit_standardised(x[tr], y[tr], num_classes, lam)
            search[lam] = top_k(m.scores(x[ho]), y[ho], 1)
        best = max(search.items(), key=lambda kv: (kv[1], kv[0]))[0]
    else:
        best = default_lam
    return fit_standardised(x, y, num_classes, best), {
        "lam": best, "holdout_images": len(ho), "holdout_top1": {f"{k:g}": v for k, v in search.items()}}


def top_k(scores: torch.Tensor, y: torch.Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == y.view(-1, 1)).any(1).double().mean().item()


def mean_class_accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    pred = scores.argmax(1)
    accs = [(pred[y == c] == c).double().mean().item() for c in torch.unique(y)]
    return float(sum(accs) / len(accs))
