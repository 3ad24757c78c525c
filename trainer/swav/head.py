"""SwAV's head (Caron et al. 2020, section 4; the facebookresearch/swav ResNet head): an MLP
projection of the trunk's pooled features to `dim` (128), L2-normalised, and K prototypes, a
bias-free linear layer whose rows are kept unit-norm (trainer/swav/train.py renormalises them
after every step), so a prototype score is a cosine similarity.

    head = SwavHead(num_features, prototypes=3000, hidden=2048, dim=128)
    z, scores = head(features)        # z [N, dim] unit rows; scores [N, K] = z @ prototypes.T

hidden=0 is the repository's `--hidden_mlp 0`: one linear layer to `dim`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SwavHead(nn.Module):
    def __init__(self, num_features: int, prototypes: int, hidden: int = 2048, dim: int = 128):
        super().__init__()
        if prototypes < 2 or dim < 1 or hidden < 0:
            raise ValueError(f"SwAV head needs prototypes >= 2, dim >= 1, hidden >= 0; got {prototypes}, {dim}, "
                             f"{hidden}")
        self.projection = nn.Linear(num_features, dim) if hidden == 0 else nn.Sequential(
            nn.Linear(num_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.prototypes = nn.Linear(dim, prototypes, bias=False)
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.normalize(self.projection(features), dim=1)
        return z, self.prototypes(z)
