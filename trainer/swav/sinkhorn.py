"""SwAV's codes: Sinkhorn-Knopp on the prototype scores of a batch (Caron et al. 2020, section 3.1,
Algorithm 1; facebookresearch/swav's `distributed_sinkhorn`).

Given scores S [B, K] (cosine similarities of B embeddings to K prototypes) the codes are
Q = Diag(u) exp(S / epsilon) Diag(v), scaled so that every sample's code sums to 1 and every
prototype receives B / K of the batch (the equipartition constraint over the whole global batch).
A few alternating normalisations (3 in the paper) approximate it: after the last one the
per-sample sums are exact, the per-prototype sums approximate. Under torch.distributed the sums
are all-reduced, so every rank's codes are those of the concatenated global batch: a rank holds
B_r rows, the constraint is over sum_r B_r.

The exponent is taken in float64 after subtracting the global maximum score, which the
normalisations cancel: the result is the reference's, without its overflow (or, in float32,
underflow of whole rows) for small epsilon. K x B doubles are cheap beside the network.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def _all_reduce(x: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=op or dist.ReduceOp.SUM)
    return x


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Codes [B, K] (float32) for scores [B, K]: rows sum to 1, columns to about (global B) / K,
    summed over the ranks."""
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 2:
        raise ValueError(f"scores must be [B >= 1, K >= 2], got {list(scores.shape)}")
    if epsilon <= 0 or iters < 1:
        raise ValueError(f"need epsilon > 0 and iters >= 1, got {epsilon}, {iters}")
    s = scores.detach().double()
    top = _all_reduce(s.max().clone(), dist.ReduceOp.MAX if dist.is_available() else None)
    q = torch.exp((s - top) / epsilon).t()  # [K, B]
    k = q.shape[0]
    b = _all_reduce(torch.tensor(float(q.shape[1]), dtype=torch.float64, device=q.device)).item()
    q /= _all_reduce(q.sum())
    for _ in range(iters):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))  # each prototype: 1/K of the mass
        q /= k
        q /= q.sum(dim=0, keepdim=True)               # each sample: 1/B of the mass
        q /= b
    return (q * b).t().float()
