"""The SwAV network: a timm trunk and the swav head (trainer/swav/head.py), run on a list of
views. Views of one side are concatenated and embedded together (facebookresearch/swav's
`idx_crops`), so BatchNorm sees the batch's views of a resolution at once."""
from __future__ import annotations

import torch

from trainer.models import Classifier, create_model


class SwavModel(Classifier):
    def forward(self, views: list[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [V*B, dim], scores [V*B, K]), view-major, for views [B, 3, S_v, S_v]."""
        if isinstance(views, torch.Tensor):
            views = [views]
        features, i = [], 0
        while i < len(views):
            j = i + 1
            while j < len(views) and views[j].shape[-2:] == views[i].shape[-2:]:
                j += 1
            features.append(self.trunk(torch.cat(views[i:j])))
            i = j
        return self.head(torch.cat(features))


def create_swav(name: str, prototypes: int, img_size: int, head_args: dict) -> SwavModel:
    m = create_model(name, prototypes, "swav", img_size, head_args=head_args, dynamic_img_size=True)
    return SwavModel(m.trunk, m.head)
