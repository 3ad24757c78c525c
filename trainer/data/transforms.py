"""Image transforms on uint8 CHW tensors and preprocessing constants from timm.

Training: RandomResizedCrop + horizontal flip; evaluation: resize the shorter side to `size`,
then center crop (SWAG, section 4.1). Outputs stay uint8; the trainer normalizes on the device
with the mean/std of `model_data_config`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2


def train_transform(size: int = 224, scale: tuple[float, float] = (0.08, 1.0)) -> v2.Transform:
    return v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()])


def pixel_stats(values, device=None) -> torch.Tensor:
    """A model's mean or std (in [0, 1] units, per channel) as [1, 3, 1, 1] in uint8 units, to
    normalise uint8 image batches: (x - pixel_stats(mean)) / pixel_stats(std)."""
    return torch.tensor(values, device=device, dtype=torch.float32).view(1, 3, 1, 1) * 255


def eval_transform(size: int = 224) -> v2.Transform:
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


@dataclass(frozen=True)
class DataConfig:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    interpolation: str
    crop_pct: float


def model_data_config(name: str) -> DataConfig:
    """timm's preprocessing constants for model `name`; no weights are downloaded.

    The model is built on the meta device, so even a huge one costs no memory.
    """
    import timm
    import timm.data

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    cfg = timm.data.resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    if h != w:
        raise ValueError(f"{name}: non-square input size {cfg['input_size']} is not supported")
    return DataConfig(tuple(cfg["mean"]), tuple(cfg["std"]), h, cfg["interpolation"], cfg["crop_pct"])
