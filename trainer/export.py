"""Export a trained model as safetensors + a small JSON, and load it back for transfer."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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
