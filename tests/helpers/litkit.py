"""A tiny image-text problem for trainer.lit and LiT zero-shot: K colours, each image a flat
colour with a little noise, its text naming the colour; a random-init RegNetY export as the
locked tower (its pooled features separate flat colours); an ImageFolder task of the same colours."""
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.wds import Sample, shard_name, write_shard
from schemas.shard_set import ShardSetMeta
from tests.helpers.shardkit import write_meta
from trainer.export import export_model
from trainer.models import create_model

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "purple": (140, 30, 160), "orange": (240, 140, 20), "gray": (128, 128, 128), "black": (10, 10, 10)}
SIZE = 32


def colour_image(colour, rng, size: int = SIZE) -> Image.Image:
    noise = rng.integers(-12, 13, (size, size + 4, 3))
    return Image.fromarray(np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", quality=95)
    return b.getvalue()


def write_text_shards(out: Path, n: int = 160, shard_size: int = 40, shuffle_texts: bool = False, seed: int = 0,
                      no_text_every: int = 0) -> Path:
    """n images cycling through COLOURS, text 'a <colour> square' (permuted over images when
    shuffle_texts; '' for every no_text_every-th image), in jobs/shards.py's layout."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    texts = [f"a {names[i % len(names)]} square" for i in range(n)]
    if shuffle_texts:
        texts = [texts[j] for j in rng.permutation(n)]
    if no_text_every:
        texts = ["" if i % no_text_every == 0 else t for i, t in enumerate(texts)]
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, start in enumerate(range(0, n, shard_size)):
        rec = write_shard(out / shard_name(s), [
            Sample(f"{i:012d}", jpeg(colour_image(COLOURS[names[i % len(names)]], rng)),
                   meta={"image_id": f"im{i}", "labels": [0], "tail": False, "text": texts[i]})
            for i in range(start, min(n, start + shard_size))])
        shards.append((shard_name(s), rec["samples"], rec["bytes"], rec["sha256"]))
    write_meta(out, ShardSetMeta.numbered(1, shards, shard_size=shard_size, max_side=SIZE, text="text"))
    (out / "_SUCCESS").write_text("")
    return out


def write_tower(out: Path, seed: int = 0) -> Path:
    """A random-init regnety_002 exported as trainer.pretrain does (linear head, 2 labels)."""
    torch.manual_seed(seed)
    model = create_model("regnety_002", 2)
    export_model(model, out, {"model": "regnety_002", "head": "linear", "num_classes": 2, "labels": ["a", "b"],
                              "img_size": SIZE, "input_size": [3, SIZE, SIZE], "mean": [0.485, 0.456, 0.406],
                              "std": [0.229, 0.224, 0.225], "config": {}})
    return out


def write_colour_task(root: Path, per_class: int = 6, seed: int = 1) -> Path:
    """ImageFolder train/ and val/ of the colours (folder names are the class names)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for name, colour in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                colour_image(colour, rng).save(d / f"{k}.png")
    return root
