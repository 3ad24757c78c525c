"""MAWS: start hashtag pretraining from an MAE encoder (trainer.pretrain `init_from=DIR`).

DIR is the export/ directory of a `trainer.mae` run. The encoder there is the timm ViT's own
state dict, so keys map one to one; the only adaptation is the absolute position embedding,
resampled (timm's resample_abs_pos_embed) when hashtag pretraining runs at another img_size.
A different architecture, or any tensor of another shape, is refused; every key that could not
be mapped either way is logged and returned.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from trainer.mae.export import read_meta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitReport:
    loaded: int                   # tensors copied into the model
    missing: tuple[str, ...]      # model keys the export lacks: they keep their random init
    unexpected: tuple[str, ...]   # export keys the model lacks: ignored
    resized: tuple[str, ...]      # position embeddings resampled to the model's grid


def load_encoder(trunk: torch.nn.Module, export_dir: str | Path) -> InitReport:
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    d = Path(export_dir)
    meta = read_meta(d)
    arch = getattr(trunk, "pretrained_cfg", {}).get("architecture", type(trunk).__name__)
    if not isinstance(trunk, VisionTransformer) or arch != meta["model"]:
        raise ValueError(f"{d}: the MAE encoder is {meta['model']} but the model to initialise is {arch}; "
                         f"use model={meta['model']}")
    state = load_file(str(d / "encoder.safetensors"))
    own = trunk.state_dict()
    resized = []
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        prefix = 0 if trunk.no_embed_class else trunk.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=list(trunk.patch_embed.grid_size),
                                                    old_size=meta["grid"], num_prefix_tokens=prefix)
        resized.append("pos_embed")
        log.warning("%s: pos_embed resampled from a %s grid (img_size %d) to %s", d, meta["grid"],
                    meta["img_size"], list(trunk.patch_embed.grid_size))
    bad = [f"{k}: export {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{d}: encoder tensors do not fit {arch}: " + "; ".join(bad))
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    trunk.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    report = InitReport(len(own) - len(missing), missing, unexpected, tuple(resized))
    for k in missing:
        log.warning("%s: no tensor for %s in the export: it keeps its random initialisation", d, k)
    for k in unexpected:
        log.warning("%s: export tensor %s has no place in %s: ignored", d, k, arch)
    log.info("initialised %s from the MAE encoder in %s: %d of %d tensors loaded", arch, d, report.loaded, len(own))
    return report
