"""Export a trained model as a timm model directory, and load it back (transfer, dedup).

    export/config.json         timm's: architecture, num_classes, num_features, label_names (the
                               hashtags or classes), model_args, pretrained_cfg (input_size, mean,
                               std, the evaluation crop)
    export/model.safetensors   the timm model's own state dict, no prefixes. Linear head: the
                               whole classifier, the head in timm's classifier (RegNet head.fc.*,
                               ViT head.*). Any other head (MAWS's mlp): the trunk, num_classes=0
    export/head.safetensors    that other head's state dict (mlp: nn.Sequential(Linear, Tanh,
                               Linear), keys 0.* and 2.*; swav: projection.*, prototypes.weight);
                               absent for a linear head
    export/model.json          what timm has no field for: the head's name, the run's config, and
                               for a head outside timm its num_classes, labels and head_args (the
                               swav head's hidden and dim)

config.json and model.safetensors are written by timm.models.save_for_hf, so
`timm.create_model("local-dir:RUN/export", pretrained=True)` loads the model (the trunk, for an
mlp head) with every weight and no code of ours. Each fact is in one file; `read_export_meta`
gathers them. The directory is filled under a temporary name and renamed into place.

A model spec is an export directory or `random:<timm name>` (the same architecture, randomly
initialised from a seed)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.atomic import atomic_dir
from pipeline.wds import file_sha256
from trainer.data.transforms import model_data_config
from trainer.models import HEADS, architecture, create_model, from_timm, timm_model

CONFIG, WEIGHTS, HEAD, OWN = "config.json", "model.safetensors", "head.safetensors", "model.json"
# meta keys whose facts config.json holds; every other key is ours and goes to model.json
IN_CONFIG = ("model", "num_classes", "labels", "img_size", "input_size", "mean", "std")
# where timm's published weights for the architecture come from: not true of ours
SOURCE_KEYS = ("tag", "license", "description", "origin_url", "paper_name", "paper_ids", "notes")
# trainer.data.transforms.eval_transform in timm's terms: resize the shorter side, center crop
EVAL_CROP = {"crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear"}


def export_model(model: nn.Module, out_dir: Path, meta: dict) -> Path:
    """Write `model` (a trainer.models.Classifier) to out_dir as above. `meta`: model (timm name),
    head, num_classes, labels, img_size, input_size, mean, std, and our own keys (config, ...).
    Returns the weights' path."""
    out_dir = Path(out_dir)
    kind, num_classes = meta["head"], meta["num_classes"]
    _check_head(model, kind, num_classes, meta.get("head_args") or {})
    if meta["model"] != architecture(model.trunk):
        raise ValueError(f"export meta names {meta['model']} but the model is {architecture(model.trunk)}")
    labels = list(meta.get("labels") or [])
    if labels and len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for {num_classes} classes")
    net = timm_model(model)
    net.pretrained_cfg = {k: v for k, v in net.pretrained_cfg.items() if k not in SOURCE_KEYS}
    size = meta.get("img_size")
    input_size = tuple(meta.get("input_size") or ((3, size, size) if size else net.pretrained_cfg["input_size"]))
    if size and tuple(input_size) != (3, size, size):
        raise ValueError(f"export meta: input_size {list(input_size)} disagrees with img_size {size}")
    data_config = {"input_size": input_size, "mean": tuple(meta.get("mean") or net.pretrained_cfg["mean"]),
                   "std": tuple(meta.get("std") or net.pretrained_cfg["std"]), **EVAL_CROP}
    own = {k: v for k, v in meta.items() if k not in IN_CONFIG}
    in_timm = kind == "linear"
    if not in_timm:
        own.update(num_classes=num_classes, labels=labels)
    with atomic_dir(out_dir) as tmp:
        timm.models.save_for_hf(net, str(tmp), model_config={"label_names": labels} if in_timm else None,
                                safe_serialization=True, data_config=data_config)
        if not in_timm:
            save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
                      str(tmp / HEAD), metadata={"format": "pt"})
        (tmp / OWN).write_text(json.dumps(own, indent=2, sort_keys=True))
    return out_dir / WEIGHTS


def _check_head(model: nn.Module, kind: str, num_classes: int, head_args: dict) -> None:
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; valid: {', '.join(HEADS)}")
    with torch.device("meta"):  # shapes only: no memory, no draw from the caller's RNG
        ref = HEADS[kind](model.trunk.num_features, num_classes, **head_args)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.head.state_dict().items()}
    if want != have or (kind == "linear") != isinstance(model.head, nn.Linear):
        raise ValueError(f"the model's head {have} is not a {kind!r} head for {num_classes} classes {want}")


def read_export_meta(out_dir: str | Path) -> dict:
    """The export's facts from config.json and model.json, in one dict: model (timm name), head,
    num_classes, labels, img_size, input_size, mean, std, and model.json's own keys (config, ...)."""
    d = Path(out_dir)
    missing = [f for f in (CONFIG, WEIGHTS, OWN) if not (d / f).is_file()]
    if missing:
        old = " (an export from before timm's layout: re-export it)" if missing == [CONFIG] else ""
        raise ValueError(f"{d}: not an export directory{old}: missing {', '.join(missing)}")
    cfg, own = (_read_json(d / f) for f in (CONFIG, OWN))
    try:
        pcfg, kind = cfg["pretrained_cfg"], own["head"]
        input_size = list(pcfg["input_size"])
        meta = {"model": cfg["architecture"], "head": kind, "img_size": input_size[-1], "input_size": input_size,
                "mean": list(pcfg["mean"]), "std": list(pcfg["std"])}
        if kind == "linear":
            meta.update(num_classes=cfg["num_classes"], labels=list(cfg.get("label_names") or []))
        elif kind in HEADS:
            meta.update(num_classes=own["num_classes"], labels=list(own.get("labels") or []))
            if not (d / HEAD).is_file():
                raise ValueError(f"{d}: a {kind!r} head needs {HEAD}, which is missing")
        else:
            raise ValueError(f"{d / OWN}: unknown head {kind!r}; valid: {', '.join(HEADS)}")
    except KeyError as e:
        raise ValueError(f"{d}: {CONFIG} or {OWN} lacks {e}") from None
    if meta["labels"] and len(meta["labels"]) != meta["num_classes"]:
        raise ValueError(f"{d}: {len(meta['labels'])} label names for {meta['num_classes']} classes")
    return {**meta, **{k: v for k, v in own.items() if k not in meta}}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


def load_exported(out_dir: str | Path, head: bool = True) -> tuple[nn.Module, dict]:
    """(model, meta) from an export directory; the documented way to get a pretrained trunk:
    `model.trunk` is the plain timm model (num_classes=0) with the pretrained weights. The timm
    part is loaded by timm itself (`local-dir:`), strictly: every tensor in its place."""
    d = Path(out_dir)
    meta = read_export_meta(d)
    try:
        net = timm.create_model(f"local-dir:{d}", pretrained=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{d}: timm cannot load this export as {meta['model']}: {e}") from None
    if meta["head"] == "linear":
        return from_timm(net), meta
    extra = HEADS[meta["head"]](net.num_features, meta["num_classes"], **(meta.get("head_args") or {}))
    try:
        extra.load_state_dict(load_file(str(d / HEAD)))
    except RuntimeError as e:
        raise ValueError(f"{d / HEAD}: not a {meta['head']!r} head for {meta['num_classes']} classes: {e}") from None
    return from_timm(net, extra), meta


RANDOM_PREFIX = "random:"


@dataclass
class LoadedModel:
    trunk: nn.Module
    head: nn.Module | None       # the pretraining head (hashtag logits), None for random init
    name: str                    # timm name
    key: str                     # identifies the weights, for the feature cache
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    meta: dict                   # the export's read_export_meta ({} for random init)


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
    if not d.is_dir() or not (d / OWN).is_file():
        raise ValueError(f"model={spec}: not an export directory ({CONFIG} + {WEIGHTS} + {OWN}), "
                         f"nor {RANDOM_PREFIX}<timm name>")
    model, meta = load_exported(d)
    return LoadedModel(model.trunk, model.head, meta["model"], "export:" + file_sha256(d / WEIGHTS),
                       tuple(meta["mean"]), tuple(meta["std"]), meta)
