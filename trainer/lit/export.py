"""A LiT export: both towers and the tokenizer, safetensors + JSON, loaded without pickle.

    export/image/              the locked image tower: a byte-for-byte copy of the trainer.pretrain
                               export it was trained against (trainer/export.py's layout)
    export/text.safetensors    the text tower's state dict (with its projection and temperature)
    export/tokenizer.json      the tokenizer (Hugging Face `tokenizers` JSON)
    export/lit.json            the text tower's spec, img_size of the image embeddings, the
                               image export's weights sha256, pairs trained on, the run's config

The directory is filled under a temporary name and renamed into place (pipeline.atomic).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from pipeline.atomic import atomic_dir
from pipeline.wds import file_sha256
from trainer.export import WEIGHTS, LoadedModel, load_model
from trainer.lit.text_tower import TextTower, TextTowerSpec
from trainer.lit.tokenizer import encode, load_tokenizer

IMAGE, TEXT, TOKENIZER, META = "image", "text.safetensors", "tokenizer.json", "lit.json"


def export_lit(out_dir: Path, image_export: Path, text: TextTower, tok: Tokenizer, meta: dict) -> Path:
    """Write the export (see the module docstring); `meta` adds its keys to lit.json."""
    image_export = Path(image_export)
    with atomic_dir(Path(out_dir)) as tmp:
        shutil.copytree(image_export, tmp / IMAGE)
        save_file({k: v.detach().cpu().contiguous() for k, v in text.state_dict().items()}, str(tmp / TEXT),
                  metadata={"format": "pt"})
        (tmp / TOKENIZER).write_text(tok.to_str(pretty=False), encoding="utf-8")
        (tmp / META).write_text(json.dumps({"text_tower": text.spec.to_dict(),
                                            "temperature": float(text.temperature().detach()),
                                            "image_sha256": file_sha256(image_export / WEIGHTS), **meta},
                                           indent=2, sort_keys=True))
    return Path(out_dir)


@dataclass
class LitModel:
    image: LoadedModel
    text: TextTower
    tokenizer: Tokenizer
    meta: dict

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Unit embeddings [len(texts), D] of `texts` (eval mode)."""
        self.text.eval()
        rows = torch.from_numpy(encode(self.tokenizer, texts, self.text.spec.context_length))
        return torch.cat([self.text.embed(r) for r in rows.split(batch_size)])


def is_lit_export(spec: str | Path) -> bool:
    return (Path(spec) / META).is_file()


def load_lit(out_dir: str | Path) -> LitModel:
    d = Path(out_dir)
    missing = [f for f in (IMAGE, TEXT, TOKENIZER, META) if not (d / f).exists()]
    if missing:
        raise ValueError(f"{d}: not a LiT export (trainer.lit): missing {', '.join(missing)}")
    try:
        meta = json.loads((d / META).read_text())
        spec = TextTowerSpec(**meta["text_tower"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{d / META}: unreadable LiT metadata: {e}") from None
    image = load_model(str(d / IMAGE))
    if file_sha256(d / IMAGE / WEIGHTS) != meta.get("image_sha256"):
        raise ValueError(f"{d / IMAGE}: its weights are not the image tower the text tower was trained against")
    if image.trunk.num_features != spec.embed_dim:
        raise ValueError(f"{d}: the image tower gives {image.trunk.num_features}-d features, the text tower "
                         f"{spec.embed_dim}-d")
    text = TextTower(spec)
    try:
        text.load_state_dict(load_file(str(d / TEXT)))
    except RuntimeError as e:
        raise ValueError(f"{d / TEXT}: not the text tower lit.json describes: {e}") from None
    return LitModel(image, text.eval(), load_tokenizer(d / TOKENIZER), meta)
