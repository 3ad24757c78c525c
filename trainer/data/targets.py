"""Soft targets for multi-label hashtag supervision (WSL/SWAG): k labels -> 1/k on each."""
from __future__ import annotations

import torch

PAD = -1  # padding value of label tensors (shards.json records the FFCV pad width)


def pad_labels(labels: list[list[int]], pad: int = PAD) -> torch.Tensor:
    """[[3], [1, 4]] -> [[3, -1], [1, 4]] as int64 [B, max k]."""
    width = max(1, max(len(lb) for lb in labels))
    out = torch.full((len(labels), width), pad, dtype=torch.int64)
    for i, lb in enumerate(labels):
        out[i, : len(lb)] = torch.as_tensor(lb, dtype=torch.int64)
    return out


def soft_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 [B, C] from int labels [B, L] padded with -1; every row needs >= 1 distinct label."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be [batch, pad], got shape {tuple(labels.shape)}")
    labels = labels.long()
    valid = labels >= 0
    if (labels < PAD).any() or (labels >= num_classes).any():
        bad = labels[(labels < PAD) | (labels >= num_classes)].unique().tolist()
        raise ValueError(f"labels {bad} outside [0, {num_classes}) (padding is {PAD})")
    counts = valid.sum(1)
    if (counts == 0).any():
        raise ValueError(f"rows {torch.nonzero(counts == 0).flatten().tolist()} have no labels")
    ordered = labels.sort(1).values  # a repeated label would silently get 2/k
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():
        raise ValueError("a row repeats a label")
    weights = valid.float() / counts.unsqueeze(1)
    out = torch.zeros(labels.shape[0], num_classes + 1)  # column C takes the padding, then is dropped
    out.scatter_add_(1, torch.where(valid, labels, num_classes), weights)
    return out[:, :num_classes]
