"""Frozen-trunk features for the transfer protocols, extracted once and cached on disk.

Models come from trainer.export.load_model (an export directory or `random:<timm name>`).
The cache key covers the model (the export's weights hash, or name + seed), the data (every
file's name, size and mtime), the split, the resolution and the decoder (DECODER_VERSION);
features are stored as safetensors (no pickle), written under a temporary name and renamed
(pipeline.atomic).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.atomic import atomic_path
from pipeline.images import DECODER_VERSION
from trainer.data.transforms import pixel_stats
from trainer.export import LoadedModel
from transfer.downstream import ImageSet, Split, fingerprint


@torch.no_grad()
def extract(model: LoadedModel, split: Split, size: int, batch_size: int = 64, workers: int = 0,
            device: str | torch.device = "cpu", desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 [N, D], labels int64 [N]) with the eval transform, in split order."""
    from tqdm import tqdm

    device = torch.device(device)
    trunk = model.trunk.to(device).eval()
    mean, std = pixel_stats(model.mean, device), pixel_stats(model.std, device)
    loader = torch.utils.data.DataLoader(ImageSet(split, size), batch_size=batch_size, num_workers=workers,
                                         shuffle=False)
    feats, labels = [], []
    for x, y in tqdm(loader, desc=desc, unit="batch", mininterval=2):
        feats.append(trunk(x.to(device).float().sub_(mean).div_(std)).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels).long()


def cached_features(model: LoadedModel, split: Split, size: int, cache_dir: str | Path, batch_size: int = 64,
                    workers: int = 0, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """extract(), memoised in cache_dir/<key>.safetensors."""
    ident = {"model": model.key, "data": fingerprint(split), "split": split.split, "size": size,
             "transform": "resize-shorter+center-crop", "decoder": DECODER_VERSION}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        return t["features"], t["labels"]
    x, y = extract(model, split, size, batch_size, workers, device, desc=f"{split.split} features")
    with atomic_path(path) as tmp:
        save_file({"features": x.contiguous(), "labels": y.contiguous()}, str(tmp),
                  metadata={k: str(v) for k, v in ident.items()})
    return x, y
