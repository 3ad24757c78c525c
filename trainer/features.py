"""Frozen-trunk features for the transfer protocols, extracted once and cached on disk.

A model spec is an export directory (trainer/export.py) or `random:<timm name>` (the same
architecture, randomly initialised from a seed). The cache key covers the model (the export's
weights hash, or name + seed), the data (every file's name, size and mtime), the split and the
resolution; features are stored as safetensors (no pickle).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.wds import file_sha256
from trainer.downstream import ImageSet, Split, fingerprint

RANDOM_PREFIX = "random:"


@dataclass
class LoadedModel:
    trunk: nn.Module
    head: nn.Module | None       # the pretraining head (hashtag logits), None for random init
    name: str                    # timm name
    key: str                     # identifies the weights, for the feature cache
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    meta: dict                   # the export's model.json ({} for random init)


def load_model(spec: str, img_size: int | None = None, seed: int = 0) -> LoadedModel:
    """An export directory, or `random:<timm name>` (seeded random init of the same trunk)."""
    from trainer.data.transforms import model_data_config
    from trainer.models import create_model

    if spec.startswith(RANDOM_PREFIX):
        name = spec[len(RANDOM_PREFIX):]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(name, 1, img_size=img_size)
        dc = model_data_config(name)
        return LoadedModel(model.trunk, None, name, f"random:{name}:seed{seed}:img{img_size}", dc.mean, dc.std, {})
    from trainer.export import load_exported

    d = Path(spec)
    if not (d / "model.json").is_file() or not (d / "model.safetensors").is_file():
        raise ValueError(f"model={spec}: not an export directory (model.json + model.safetensors), "
                         f"nor {RANDOM_PREFIX}<timm name>")
    model, meta = load_exported(d)
    return LoadedModel(model.trunk, model.head, meta["model"], "export:" + file_sha256(d / "model.safetensors"),
                       tuple(meta["mean"]), tuple(meta["std"]), meta)


@torch.no_grad()
def extract(model: LoadedModel, split: Split, size: int, batch_size: int = 64, workers: int = 0,
            device: str | torch.device = "cpu", desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 [N, D], labels int64 [N]) with the eval transform, in split order."""
    from tqdm import tqdm

    device = torch.device(device)
    trunk = model.trunk.to(device).eval()
    mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255
    loader = torch.utils.data.DataLoader(ImageSet(split, size), batch_size=batch_size, num_workers=workers,
                                         shuffle=False)
    feats, labels = [], []
    for x, y in tqdm(loader, desc=desc, unit="batch", mininterval=2):
        feats.append(trunk(x.to(device).float().sub_(mean).div_(std)).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels).long()


def cached_features(model: LoadedModel, split: Split, size: int, cache_dir: str | Path, batch_size: int = 64,
                    workers: int = 0, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """extract(), memoised in cache_dir/<key>.safetensors (written to a temp name, then renamed)."""
    ident = {"model": model.key, "data": fingerprint(split), "split": split.split, "size": size,
             "transform": "resize-shorter+center-crop"}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        t = load_file(str(path))
        return t["features"], t["labels"]
    x, y = extract(model, split, size, batch_size, workers, device, desc=f"{split.split} features")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"features": x.contiguous(), "labels": y.contiguous()}, str(tmp),
              metadata={k: str(v) for k, v in ident.items()})
    tmp.replace(path)
    return x, y
