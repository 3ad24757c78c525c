"""Export a trained model as safetensors + a small JSON, and load it back (transfer, dedup).

A model spec is an export directory or `random:<timm name>` (the same architecture, randomly
initialised from a seed)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.wds import file_sha256
from trainer.data.transforms import model_data_config
from trainer.models import create_model


def export_model(model: torch.nn.Module, out_dir: Path, meta: dict) -> Path:
    """model.safetensors (trunk.* and head.* tensors) + model.json (timm name, head, classes,
    label names, input size, mean/std). Returns the safetensors path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = out_dir / "model.safetensors"
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"timm_model": meta["model"]})
    tmp.replace(path)
    (out_dir / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load_exported(out_dir: str | Path, head: bool = True) -> tuple[torch.nn.Module, dict]:
    """(model, meta) from an export directory; the documented way to get a pretrained trunk:
    `model.trunk` is the plain timm model (num_classes=0) with the pretrained weights."""
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / "model.json").read_text())
    model = create_model(meta["model"], meta["num_classes"], meta["head"], meta.get("img_size"))
    state = load_file(str(out_dir / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{out_dir}: weights do not match {meta['model']}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model, meta


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
    if spec.startswith(RANDOM_PREFIX):
        name = spec[len(RANDOM_PREFIX):]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(name, 1, img_size=img_size)
        dc = model_data_config(name)
        return LoadedModel(model.trunk, None, name, f"random:{name}:seed{seed}:img{img_size}", dc.mean, dc.std, {})
    d = Path(spec)
    if not (d / "model.json").is_file() or not (d / "model.safetensors").is_file():
        raise ValueError(f"model={spec}: not an export directory (model.json + model.safetensors), "
                         f"nor {RANDOM_PREFIX}<timm name>")
    model, meta = load_exported(d)
    return LoadedModel(model.trunk, model.head, meta["model"], "export:" + file_sha256(d / "model.safetensors"),
                       tuple(meta["mean"]), tuple(meta["std"]), meta)
