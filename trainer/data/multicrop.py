"""SwAV's multi-crop views of one image (Caron et al. 2020, section 3.2 and appendix; SEER): a
few global crops at full resolution and V local crops at a small one, each with SwAV's
augmentations, in the order of facebookresearch/swav's MultiCropDataset:

    RandomResizedCrop(size, scale) -> horizontal flip (p 0.5) -> colour distortion
    (ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with p 0.8, then grayscale with p 0.2) -> Gaussian blur
    (p 0.5, sigma in [0.1, 2], kernel ~10% of the side)

The paper's setting is 2 x 224 (scale 0.14-1) + 6 x 96 (scale 0.05-0.14). Views stay uint8 CHW;
the trainer normalises them on the device. The draws come from torch's global RNG, which the
WebDataset reader seeds per batch from (seed, epoch, rank, batch): a view is the same whichever
worker builds it and after a resume.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class MultiCropSpec:
    global_crops: int = 2
    global_size: int = 224
    global_scale: tuple[float, float] = (0.14, 1.0)
    local_crops: int = 6
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.14)
    jitter: float = 1.0        # colour distortion strength s
    grayscale_p: float = 0.2
    blur_p: float = 0.5

    def __post_init__(self):
        if self.global_crops < 2:
            raise ValueError(f"global_crops must be >= 2 (SwAV swaps assignments between them), got {self.global_crops}")
        if self.local_crops < 0 or self.global_size < 8 or (self.local_crops and self.local_size < 8):
            raise ValueError(f"need local_crops >= 0 and crop sides >= 8; got {self.local_crops} local crops, sides "
                             f"{self.global_size} and {self.local_size}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"{name} must be 0 < lo <= hi <= 1, got {(lo, hi)}")
        for name in ("grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")

    @property
    def sizes(self) -> list[int]:
        """Each view's side, globals first (the order of the trainer's crops)."""
        return [self.global_size] * self.global_crops + [self.local_size] * self.local_crops


def view_transform(size: int, scale: tuple[float, float], spec: MultiCropSpec) -> v2.Transform:
    s = spec.jitter
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd, ~10% of the side
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        v2.RandomGrayscale(p=spec.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=spec.blur_p),
    ])


class MultiCrop:
    """image uint8 [3, H, W] -> tuple of views, globals then locals (spec.sizes)."""

    def __init__(self, spec: MultiCropSpec):
        self.spec = spec
        self.views = [view_transform(spec.global_size, spec.global_scale, spec)] * spec.global_crops + \
            [view_transform(spec.local_size, spec.local_scale, spec)] * spec.local_crops

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t(image) for t in self.views)
