"""What the dedup job computes per image: a pHash, a pooled embedding or an R-MAC descriptor.

A `Describer` turns decoded images (and, for the evaluation side, their crop/mirror variants)
into descriptors: `binary` 63-bit pHash values (int64) or `float` vectors. `described_batches`
runs it over Arrow batches of images (dedup/spark.py's describe_rows, in mapInArrow): one row per
distinct variant of each readable image, one row with its reason for each unreadable or
low-information one. The pretraining side uses `Describer.whole` on images it has decoded itself
(dedup/index.py), so both sides run the same code.

- phash: dedup/phash.py on the dedup view of the image (decode_jpeg_roundtrip, 128 px).
- embedding: a frozen trunk's pooled output (an export of trainer.pretrain or random:<timm name>;
  nothing is downloaded) at `img_size`, with the evaluation transform.
- rmac: the same trunk's last feature map, regional max-pooled over Tolias' multi-scale grid,
  summed and L2-normalised (dedup/rmac.py), as WSL section 3 did with a ResNet-50.
The low-information rule is pHash's for every method.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dedup.phash import MIN_SET_BITS, Box, decode_jpeg_roundtrip, low_information, phash_pair, variant_hashes
from pipeline.image_reader import read_images
from pipeline.images import ImageRejected

METHODS = {"phash": "63-bit DCT perceptual hash, Hamming distance",
           "embedding": "frozen trunk's pooled output, mean-centred, cosine distance",
           "rmac": "R-MAC of a frozen trunk's last feature map, cosine distance"}
WHOLE: Box = (0.0, 0.0, 0.0, 0.0)
_TRUNKS: dict = {}  # (spec, img_size) -> (trunk, mean, std), once per Python worker


def _trunk(spec: str, img_size: int):
    import torch

    from trainer.export import load_model

    if (spec, img_size) not in _TRUNKS:
        torch.set_num_threads(1)  # one Spark task per core already
        m = load_model(spec, img_size=img_size)
        mean = torch.tensor(m.mean).view(1, 3, 1, 1) * 255
        std = torch.tensor(m.std).view(1, 3, 1, 1) * 255
        _TRUNKS[(spec, img_size)] = (m.trunk.eval(), mean, std)
    return _TRUNKS[(spec, img_size)]


@dataclass(frozen=True)
class Describer:
    method: str                  # one of METHODS
    model: str | None = None     # embedding / rmac: export directory or random:<timm name>
    img_size: int = 224          # embedding / rmac: input resolution
    rmac_levels: int = 3         # rmac: scales of the region grid
    batch_size: int = 64         # trunk forward batch

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {sorted(METHODS)}")
        if self.method != "phash" and not self.model:
            raise ValueError(f"method {self.method} needs a model (export directory or random:<timm name>)")

    @property
    def kind(self) -> str:
        return "binary" if self.method == "phash" else "float"

    @property
    def decode_side(self) -> int:
        return 128 if self.method == "phash" else max(128, 2 * self.img_size)

    def decode(self, data, min_set_bits: int):
        """(rgb, its whole-image pHash, None) of an image's bytes, else (None, None, (reason,
        detail)); `data` may be the ImageRejected pipeline.image_reader gave for it."""
        try:
            if isinstance(data, ImageRejected):
                raise data
            rgb = decode_jpeg_roundtrip(data, self.decode_side)
        except ImageRejected as e:
            return None, None, (e.reason, e.detail[:300])
        h = phash_pair(rgb)[0]
        if low_information(h, min_set_bits):
            return None, None, ("low_information", f"{bin(h).count('1')} of 63 hash bits set")
        return rgb, h, None

    def describe(self, images: list, crops: list[Box], flips: bool) -> list[list[tuple[int, bool, object]]]:
        """Per image, (variant = crop index, flipped, descriptor) for each crop and its mirror
        image; pHash keeps one row per distinct hash (symmetric images hash alike mirrored)."""
        if self.method == "phash":
            out = []
            for rgb in images:
                seen, rows = set(), []
                for v, f, h in variant_hashes(rgb, crops, flips):
                    if h not in seen:
                        seen.add(h)
                        rows.append((v, f, h))
                out.append(rows)
            return out
        keys, pixels = [], []
        for k, rgb in enumerate(images):
            for v, f, x in _variants(rgb, crops, flips, self.img_size):
                keys.append((k, v, f))
                pixels.append(x)
        vectors = self._forward(pixels)
        out = [[] for _ in images]
        for (k, v, f), vec in zip(keys, vectors):
            out[k].append((v, f, vec))
        return out

    def whole(self, images: list, hashes: list[int]) -> np.ndarray:
        """Whole-image descriptors of decoded images and their `decode` hashes: (n,) int64 pHash
        values (the hashes themselves) or (n, dim) float32."""
        if self.method == "phash":
            return np.array(hashes, np.int64)
        return self._forward([x for rgb in images for _, _, x in _variants(rgb, [WHOLE], False, self.img_size)])

    def _forward(self, pixels: list) -> np.ndarray:
        import torch

        from dedup.rmac import feature_map, rmac

        if not pixels:
            return np.zeros((0, 0), np.float32)
        trunk, mean, std = _trunk(self.model, self.img_size)
        out = []
        with torch.inference_mode():
            for s in range(0, len(pixels), self.batch_size):
                x = torch.stack(pixels[s:s + self.batch_size]).float().sub_(mean).div_(std)
                y = trunk(x) if self.method == "embedding" else rmac(feature_map(trunk, x), self.rmac_levels)
                out.append(y.float().numpy())
        return np.concatenate(out)


def _variants(rgb, crops: list[Box], flips: bool, img_size: int):
    """(variant, flipped, uint8 [3, S, S]) per crop box (fractions cut per side) and mirror."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from trainer.data.transforms import eval_transform

    tf = eval_transform(img_size)
    w, h = rgb.size
    for i, (l, t, r, b) in enumerate(crops):
        im = rgb.crop((round(l * w), round(t * h), w - round(r * w), h - round(b * h))) if any((l, t, r, b)) else rgb
        yield i, False, tf(TF.pil_to_tensor(im))
        if flips:
            yield i, True, tf(TF.pil_to_tensor(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


CHUNK = 256  # images decoded and held at once by a task (Arrow batches hold up to 65,536 rows)


def chunked(batches, rows: int = CHUNK):
    """Record batches cut into slices of at most `rows` rows (zero-copy)."""
    for b in batches:
        for s in range(0, b.num_rows, rows):
            yield b.slice(s, rows)


DESCRIBED_FIELDS = [("variant", pa.int32()), ("flipped", pa.bool_()), ("hash", pa.int64()),
                    ("vector", pa.list_(pa.float32())), ("reason", pa.string()), ("detail", pa.string())]
DESCRIBED_DDL = "variant int, flipped boolean, hash bigint, vector array<float>, reason string, detail string"


def described_batches(batches, keys: list[str], image_col: str, describer: Describer, crops: list[Box],
                      flips: bool, image_root: str | None, min_set_bits: int = MIN_SET_BITS):
    """Per Arrow batch of (keys, image_col): keys + (variant, flipped, hash, vector, reason,
    detail), one row per variant of each readable image (hash for phash, vector otherwise), one
    row with a reason per rejected one."""
    schema = pa.schema([(k, pa.string()) for k in keys] + DESCRIBED_FIELDS)
    for b in chunked(batches):
        cols = [b.column(k).to_pylist() for k in keys]
        rows, good, rgbs = [], [], []
        for i, data in enumerate(read_images(b.column(image_col).to_pylist(), image_root)[0]):
            rgb, _, rejected = describer.decode(data, min_set_bits)
            if rgb is None:
                rows.append((i, None, None, None, *rejected))
            else:
                good.append(i)
                rgbs.append(rgb)
        for i, variants in zip(good, describer.describe(rgbs, crops, flips)):
            rows += [(i, v, f, d, None, None) for v, f, d in variants]
        out = {n: [] for n in schema.names}
        for i, v, f, d, reason, detail in rows:
            for k, c in zip(keys, cols):
                out[k].append(c[i])
            binary = describer.kind == "binary" and d is not None
            out["variant"].append(v)
            out["flipped"].append(f)
            out["hash"].append(int(d) if binary else None)
            out["vector"].append(d.tolist() if d is not None and not binary else None)
            out["reason"].append(reason)
            out["detail"].append(detail)
        yield pa.RecordBatch.from_pydict(out, schema=schema)
