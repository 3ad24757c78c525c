"""The MAE export: encoder and decoder weights (the MAWS release shipped no decoder) + mae.json.

    run_dir/export/encoder.safetensors   the timm ViT's state dict (num_classes=0): what
                                         trainer.pretrain `init_from=run_dir/export` loads
    run_dir/export/decoder.safetensors   the MAE decoder
    run_dir/export/mae.json              timm model name, img_size, patch size, decoder spec,
                                         mask ratio, mean/std, the run's config

mae.json is written last: a directory without it is not a finished export.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from pipeline.atomic import atomic_path, write_text_atomic
from trainer.mae.model import DecoderSpec, MaskedAutoencoder, build_mae

FILES = ("encoder.safetensors", "decoder.safetensors", "mae.json")


def _save(state: dict, path: Path, meta: dict) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=meta)


def export_mae(mae: MaskedAutoencoder, out_dir: Path, model: str, img_size: int, decoder: DecoderSpec,
               extra: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "mae.json").unlink(missing_ok=True)
    _save(mae.encoder.state_dict(), out_dir / "encoder.safetensors", {"timm_model": model})
    _save(mae.decoder.state_dict(), out_dir / "decoder.safetensors", {"timm_model": model})
    meta = {"kind": "mae", "model": model, "img_size": img_size, "patch_size": mae.patch,
            "grid": list(mae.grid), "embed_dim": mae.encoder.embed_dim,
            "num_prefix_tokens": mae.encoder.num_prefix_tokens, "mask_ratio": mae.mask_ratio,
            "norm_pix_loss": mae.norm_pix_loss, "decoder": asdict(decoder), **extra}
    write_text_atomic(out_dir / "mae.json", json.dumps(meta, indent=2, sort_keys=True))
    return out_dir


def read_meta(export_dir: str | Path) -> dict:
    d = Path(export_dir)
    missing = [f for f in FILES[:1] + FILES[2:] if not (d / f).is_file()]
    if missing:
        hint = " (that is a trainer.pretrain export)" if (d / "model.json").is_file() else ""
        raise ValueError(f"{d}: not an MAE export{hint}: missing {', '.join(missing)}; expected the export/ "
                         f"directory of a finished `trainer.mae` run")
    meta = json.loads((d / "mae.json").read_text())
    if meta.get("kind") != "mae":
        raise ValueError(f"{d / 'mae.json'}: kind is {meta.get('kind')!r}, expected 'mae'")
    return meta


def load_mae(export_dir: str | Path) -> tuple[MaskedAutoencoder, dict]:
    """The whole MAE (encoder + decoder) back from an export, e.g. to continue or inspect it."""
    d = Path(export_dir)
    meta = read_meta(d)
    mae = build_mae(meta["model"], meta["img_size"], DecoderSpec(**meta["decoder"]), meta["mask_ratio"],
                    meta["norm_pix_loss"])
    for part, module in (("encoder", mae.encoder), ("decoder", mae.decoder)):
        missing, unexpected = module.load_state_dict(load_file(str(d / f"{part}.safetensors")), strict=False)
        if missing or unexpected:
            raise ValueError(f"{d / part}.safetensors does not match {meta['model']}'s MAE {part}: "
                             f"missing {missing}, unexpected {unexpected}")
    return mae, meta
