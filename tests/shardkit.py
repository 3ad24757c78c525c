"""Tiny real shard sets for trainer tests, written with the same writer as jobs/shards.py."""
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.wds import shard_name, write_shard


def make_shards(out: Path, n: int = 96, shard_size: int = 16, num_classes: int = 6, size: int = 40,
                uniform: bool = False, seed: int = 0) -> Path:
    """n samples; label of sample i is i % num_classes (+ a second label for some), and the image
    is a colour that encodes the label, so a model can learn it. uniform=True: every sample is the
    same flat-colour image with the same label (any crop or flip of it is identical)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, n, shard_size):
        rows = []
        for i in range(s, min(n, s + shard_size)):
            label = 0 if uniform else i % num_classes
            labels = [label] if uniform or i % 3 else sorted({label, (label + 1) % num_classes})
            colour = (200, 30, 30) if uniform else tuple(int(c) for c in rng.integers(0, 255, 3) // 4 + 40 * label % 255)
            a = np.full((size, size + 8, 3), colour, np.uint8)
            b = io.BytesIO()
            Image.fromarray(a).save(b, "JPEG", quality=95)
            rows.append((f"{i:09d}", b.getvalue(), {"image_id": f"im{i}", "labels": labels, "tail": False,
                                                    "position": i}))
        name = shard_name(len(shards))
        rec = write_shard(out / name, rows)
        shards.append({"name": name, "first_position": s, "last_position": s + len(rows) - 1, **rec})
    (out / "shards.json").write_text(json.dumps({"num_classes": num_classes, "samples": n,
                                                 "shard_size": shard_size, "max_side": size, "shards": shards}))
    (out / "_SUCCESS").write_text("")
    return out
