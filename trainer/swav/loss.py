"""SwAV's swapped prediction (Caron et al. 2020, eq. 1-3; facebookresearch/swav main_swav.py).

For each view i used for assignment (the global crops), its codes q_i come from Sinkhorn-Knopp on
its detached prototype scores (with the queue's scores in front, when a queue is in use: only
the batch's rows are kept). Every other view v predicts q_i from its own scores:

    loss = mean_i [ 1/(V-1) sum_{v != i} mean_b ( -sum_k q_i[b,k] log softmax(s_v[b] / tau)_k ) ]

Scores are crop-major: rows [v*B, (v+1)*B) are view v of the batch's B images.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from trainer.swav.sinkhorn import sinkhorn


def swapped_prediction(scores: torch.Tensor, batch: int, views: int, assign: tuple[int, ...] = (0, 1),
                       temperature: float = 0.1, epsilon: float = 0.05, iters: int = 3,
                       queue_scores: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The SwAV loss of scores [views * batch, K]; queue_scores[n]: [Q, K] scores of the queued
    embeddings of view assign[n] (or None)."""
    if scores.shape[0] != views * batch:
        raise ValueError(f"scores have {scores.shape[0]} rows, expected views x batch = {views} x {batch}")
    if views < 2 or not assign or any(not 0 <= i < views for i in assign):
        raise ValueError(f"need views >= 2 and assignment views within them; got {views}, {assign}")
    total = scores.new_zeros((), dtype=torch.float32)
    for n, i in enumerate(assign):
        out = scores[i * batch:(i + 1) * batch].detach()
        if queue_scores is not None and queue_scores[n] is not None:
            out = torch.cat([queue_scores[n].to(out.dtype), out])
        q = sinkhorn(out, epsilon, iters)[-batch:]
        sub = scores.new_zeros((), dtype=torch.float32)
        for v in range(views):
            if v != i:
                logp = F.log_softmax(scores[v * batch:(v + 1) * batch].float() / temperature, dim=1)
                sub = sub - (q * logp).sum(dim=1).mean()
        total = total + sub / (views - 1)
    return total / len(assign)
