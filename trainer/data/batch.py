"""What every reader yields: one batch for the trainer."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """images: uint8 [B, 3, size, size] (normalized on the device by the trainer); with a reader
    transform of several views (SwAV's multi-crop) a list of such, one per view;
    targets: float32 [B, C] soft targets (1/k on each of an image's k labels);
    positions: int64 [B], each sample's `position` in the resampled sample table;
    skipped: 'shard:key: reason' of each sample whose image failed to decode and was dropped from
    the batch (WebDataset with skip_bad_images; B is then that much smaller). The trainer counts
    them against max_bad_samples.

    FFCV's images are views into buffers it reuses a few batches later: copy or move them
    to the device before keeping them.
    """
    images: torch.Tensor
    targets: torch.Tensor
    positions: torch.Tensor
    skipped: tuple[str, ...] = ()
