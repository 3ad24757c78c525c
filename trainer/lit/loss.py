"""Symmetric InfoNCE over the global batch (CLIP; LiT), exact under DDP.

Every rank computes the same loss over the whole global batch: the image embeddings of the
global batch (fixed: the locked tower's), and the text embeddings all-gathered with their
gradient. GatherRows' backward sums the ranks' gradients (all-reduce) and keeps this rank's rows;
every rank's loss being the same L, each rank's text gradient is then world_size x dL/dz_rank,
and DDP's mean over ranks gives the text tower exactly dL/dtheta. The temperature's gradient is
computed whole on every rank, and DDP's mean leaves it as it is. So N processes train as one
process on the concatenated batch (up to float rounding).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class GatherRows(torch.autograd.Function):
    """[b, D] on each of the ranks -> [world * b, D] in rank order; the gradient flows back to each rank's rows."""

    @staticmethod
    def forward(ctx, x):
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows[0]:ctx.rows[1]]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        return GatherRows.apply(x)
    return x


def symmetric_infonce(images: torch.Tensor, texts: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies of logits t * images @ texts^T,
    the i-th image's positive being the i-th text. images, texts: unit rows [B, D]."""
    if images.shape != texts.shape:
        raise ValueError(f"images {tuple(images.shape)} and texts {tuple(texts.shape)} must pair row by row")
    logits = temperature * images @ texts.t()
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
