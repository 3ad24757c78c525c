"""The dedup job's settings (jobs/dedup.py parses them from its flags): one frozen dataclass,
checked once, and the values each method defaults to."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dedup.ann import EF_SEARCH, INDEXES, IndexSpec
from dedup.describe import METHODS, Describer
from dedup.pair_check import MIN_CORRELATION
from dedup.phash import BITS, MIN_SET_BITS, Box, crop_grid

DEFAULT_THRESHOLD = {"phash": 6, "embedding": 0.1, "rmac": 0.02}  # rmac: measured on the constructed case (README)
DEFAULT_CROP_STEPS = {"phash": 3, "embedding": 1, "rmac": 1}  # descriptors move less under a crop than pHash bits do
TRANSFORM = {"phash": "none", "embedding": "centre", "rmac": "none"}  # rmac + --whiten: "whiten"


@dataclass(frozen=True)
class DedupConfig:
    manifest: str = field(metadata={"help": "pretraining manifest, Parquet or JSON Lines"})
    eval: tuple[str, ...] = field(metadata={"help": "evaluation manifests or image folders (repeat or comma-separate)"})
    out: str = field(metadata={"help": "output directory (replaced atomically)"})
    method: str = field(default="phash", metadata={"help": f"one of {sorted(METHODS)}"})
    threshold: float | None = field(default=None, metadata={
        "help": f"largest distance that matches: Hamming bits of 63 (phash, default {DEFAULT_THRESHOLD['phash']}) "
                f"or cosine distance 1 - cos (embedding, rmac; default {DEFAULT_THRESHOLD['rmac']})"})
    index: str = field(default="auto", metadata={
        "help": f"faiss index of the evaluation variants, one of {INDEXES}: flat (exact), hnsw (graph), "
                "auto (flat when the index or the manifest is small: dedup.ann.IndexSpec.resolved)"})
    hnsw_m: int = field(default=IndexSpec.hnsw_m, metadata={"help": "HNSW graph degree"})
    ef_search: int | None = field(default=None, metadata={
        "help": f"HNSW search list length (default {EF_SEARCH['binary']} for phash, {EF_SEARCH['float']} otherwise)"})
    search_k: int = field(default=64, metadata={"help": "nearest evaluation variants read per pretraining image"})
    probe: int = field(default=8, metadata={
        "help": "nearest evaluation images kept per pretraining image (matches and neighbour lists come from these)"})
    neighbours: int = field(default=21, metadata={"help": "nearest pretraining images listed per evaluation image (WSL: 21)"})
    inspect: int = field(default=24, metadata={"help": "evaluation images with an inspection sheet of their neighbours"})
    model: str | None = field(default=None, metadata={
        "help": "embedding, rmac: an export directory of trainer.pretrain, or random:<timm name>"})
    img_size: int | None = field(default=None, metadata={"help": "embedding, rmac: input resolution (default: the export's, else 224)"})
    rmac_levels: int = field(default=3, metadata={"help": "rmac: scales of the region grid"})
    whiten: bool = field(default=False, metadata={"help": "rmac: PCA-whitening learned on the evaluation images"})
    whiten_dim: int | None = field(default=None, metadata={"help": "rmac --whiten: dimensions kept (default all)"})
    max_crop: float = field(default=0.1, metadata={"help": "evaluation images are also described cropped by up to this"})
    crop_steps: int | None = field(default=None, metadata={
        "help": "crop grid steps per side pair (0: no crop variants; default 3 for phash, 1 otherwise)"})
    flips: bool = field(default=True, metadata={"help": "also match mirrored evaluation images"})
    min_correlation: float = field(default=MIN_CORRELATION, metadata={
        "help": "a pair within the threshold must also have aligned 16x16 luma thumbnails correlated this much "
                "(dedup/pair_check.py; -1: off)"})
    min_set_bits: int = field(default=MIN_SET_BITS, metadata={
        "help": "images whose hash has fewer 1 bits are counted as low_information, never matched"})
    image_root: str | None = field(default=None, metadata={"help": "resolve relative image paths against this"})
    sheet_pairs: int = field(default=24, metadata={"help": "pairs on the contact sheet"})
    master: str | None = field(default=None, metadata={"help": "Spark master (default: spark-submit's)"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown --method {self.method!r}; valid: {sorted(METHODS)}")
        if not self.eval:
            raise ValueError("--eval: give at least one evaluation manifest or image folder")
        if self.threshold is None:
            object.__setattr__(self, "threshold", DEFAULT_THRESHOLD[self.method])
        if self.crop_steps is None:
            object.__setattr__(self, "crop_steps", DEFAULT_CROP_STEPS[self.method])
        if self.method == "phash":
            self._check_phash()
        else:
            self._check_trunk()
        try:
            crop_grid(self.max_crop, self.crop_steps)  # raises on a bad grid
        except ValueError as e:
            raise ValueError(f"--max-crop {self.max_crop} --crop-steps {self.crop_steps}: {e}") from None
        try:
            self.index_spec()
        except ValueError as e:
            raise ValueError(f"--index {self.index} --hnsw-m {self.hnsw_m} --ef-search {self.ef_search}: {e}") from None
        for name, lo in (("search_k", 1), ("probe", 1), ("neighbours", 1), ("inspect", 0), ("sheet_pairs", 0)):
            if getattr(self, name) < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {lo}, got {getattr(self, name)}")
        if self.probe > self.search_k:
            raise ValueError(f"--probe {self.probe} must be <= --search-k {self.search_k}")
        if not -1.0 <= self.min_correlation <= 1.0:
            raise ValueError(f"--min-correlation must be in [-1, 1], got {self.min_correlation}")

    def _check_phash(self):
        if self.threshold != int(self.threshold) or not 0 <= self.threshold < BITS // 2:
            raise ValueError(f"--threshold must be a whole number of bits in [0, {BITS // 2}) for phash, got {self.threshold}")
        object.__setattr__(self, "threshold", int(self.threshold))
        for name in ("model", "img_size", "whiten_dim"):
            if getattr(self, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} is for --method embedding or rmac")
        if self.whiten:
            raise ValueError("--whiten is for --method rmac")

    def _check_trunk(self):
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"--threshold is a cosine distance 1 - cos for {self.method}, in [0, 1), got {self.threshold}")
        if self.model is None:
            raise ValueError(f"--method {self.method} needs --model: an export directory of trainer.pretrain "
                             "or random:<timm name> (nothing is downloaded)")
        if self.img_size is not None and self.img_size < 16:
            raise ValueError(f"--img-size must be >= 16, got {self.img_size}")
        if self.method != "rmac" and (self.whiten or self.whiten_dim is not None):
            raise ValueError("--whiten / --whiten-dim are for --method rmac")
        if self.whiten_dim is not None and self.whiten_dim < 1:
            raise ValueError(f"--whiten-dim must be >= 1, got {self.whiten_dim}")
        if not 1 <= self.rmac_levels <= 6:
            raise ValueError(f"--rmac-levels must be in [1, 6], got {self.rmac_levels}")

    def index_spec(self) -> IndexSpec:
        return IndexSpec("binary" if self.method == "phash" else "float", self.index, self.hnsw_m,
                         ef_search=self.ef_search)

    def describer(self) -> Describer:
        if self.method == "phash":
            return Describer("phash")
        return Describer(self.method, self.model, self.embedding_img_size(), self.rmac_levels)

    def embedding_img_size(self) -> int:
        """--img-size, else the export's training resolution, else 224."""
        if self.img_size is not None:
            return self.img_size
        if self.model.startswith("random:"):
            return 224
        from trainer.export import read_export_meta

        return int(read_export_meta(self.model)["img_size"])

    def crops(self) -> list[Box]:
        """The crop boxes every evaluation image is described at."""
        return crop_grid(self.max_crop, self.crop_steps)

    def check_crops(self) -> list[Box]:
        """The pair check's crop grid: at least as fine as pHash's (an embedding match's variant
        is not always the best-aligned crop)."""
        if not self.crop_steps:
            return self.crops()
        return crop_grid(self.max_crop, max(self.crop_steps, DEFAULT_CROP_STEPS["phash"]))

    def transform(self) -> str:
        """How float descriptors are post-processed before indexing (dedup.index.EvalIndex.build)."""
        return "whiten" if self.whiten else TRANSFORM[self.method]

    def rule(self) -> str:
        if self.method == "phash":
            return f"Hamming distance <= {self.threshold} of {BITS} bits"
        return f"cosine distance <= {self.threshold}"


def eval_set_names(paths: tuple[str, ...]) -> list[str]:
    """A short, unique name per evaluation source: its file or folder name without suffix."""
    names = []
    for p in paths:
        base = Path(p.rstrip("/")).name.split(".")[0] or "eval"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names
