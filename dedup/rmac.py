"""R-MAC descriptors of a trunk's last feature map, and PCA-whitening learned on descriptors.

R-MAC (Tolias, Sicre & Jégou, "Particular object retrieval with integral max-pooling of CNN
activations", ICLR 2016), the descriptor WSL (Mahajan et al. 2018, section 3) used to find
near-duplicates of its evaluation images in the pretraining data:

1. regions: a multi-scale grid over the feature map [C, h, w] (`region_grid`). The whole map,
   then at level l = 1..L square regions of side floor(2 min(h, w) / (l + 1)), l per side, with a
   few extra positions along the long side, chosen so consecutive regions overlap by about 40%;
2. each region's channel-wise max (MAC), L2-normalised;
3. the regional vectors summed and the sum L2-normalised (`rmac`).

A crop or a rescale of an image moves its content between regions, but most regions keep a
close counterpart, so the sum changes little: R-MAC is robust to the crops that pooled
embeddings miss. The grid follows the reference implementation (Radenović et al.,
cnnimageretrieval-pytorch `rmac`, after Tolias' MATLAB) to the region, float32 rounding
included; duplicate regions (tiny maps) are kept, as there.

PCA-whitening (Jégou & Chum, ECCV 2012) learned on a set of descriptors (`fit_whitening`)
decorrelates their components and down-weights the dominant directions that all images share
(`Whitening.apply`). Tolias et al. learn it on a separate image set; the dedup job learns it
on the evaluation images' own descriptors. Eigenvalues are shrunk towards their mean so that
with fewer descriptors than dimensions the tiny ones do not amplify noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Extra positions along the long side are picked from these counts (Tolias' MATLAB, the reference).
_LONG_SIDE_STEPS = (2, 3, 4, 5, 6, 7)


def region_grid(height: int, width: int, levels: int = 3,
                overlap: float = 0.4) -> list[tuple[int, int, int, int]]:
    """Tolias' R-MAC regions (y0, x0, y1, x1), end-exclusive, of a height x width feature map.

    The first region is the whole map; then, per level, the square regions in row-major order.
    Computed in float32 with the reference's formulas, so the regions are the reference's.
    """
    for name, value in (("height", height), ("width", width), ("levels", levels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0.0 < float(overlap) < 1.0:
        raise ValueError(f"overlap must be in (0, 1), got {overlap!r}")
    H, W = int(height), int(width)
    w = min(H, W)
    # Extra positions on the long side: the count whose overlap is closest to `overlap`.
    steps = torch.tensor(_LONG_SIDE_STEPS, dtype=torch.float32)
    b = (max(H, W) - w) / (steps - 1)
    idx = int(torch.argmin(torch.abs((w ** 2 - w * b) / w ** 2 - overlap)))
    Wd = idx + 1 if H < W else 0
    Hd = idx + 1 if H > W else 0

    regions = [(0, 0, H, W)]
    for level in range(1, levels + 1):
        wl = math.floor(2 * w / (level + 1))
        if wl == 0:
            continue
        wl2 = math.floor(wl / 2 - 1)
        starts_x = _region_starts(W, wl, wl2, level + Wd)
        starts_y = _region_starts(H, wl, wl2, level + Hd)
        for y0 in starts_y:
            for x0 in starts_x:
                if not (0 <= y0 and y0 + wl <= H and 0 <= x0 and x0 + wl <= W):
                    raise AssertionError(f"region ({y0}, {x0}, side {wl}) outside {H}x{W}")
                regions.append((y0, x0, y0 + wl, x0 + wl))
    return regions


def _region_starts(side: int, wl: int, wl2: int, count: int) -> list[int]:
    """`count` start offsets of regions of side wl along a side of length `side` (reference)."""
    b = 0.0 if count == 1 else (side - wl) / (count - 1)
    centres = torch.floor(wl2 + torch.arange(count, dtype=torch.float32) * b) - wl2
    return [int(c) for c in centres.tolist()]


def feature_map(trunk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last feature map [N, C, h, w] of a timm model for images x [N, 3, H, W].

    `trunk.forward_features(x)`: NCHW maps (CNNs) as they are, NHWC ones (models whose
    `output_fmt` is 'NHWC', e.g. Swin) permuted; ViT tokens [N, T, C] lose their
    `num_prefix_tokens` class/register tokens and the patch tokens are laid out on the patch
    grid (`patch_embed.grid_size`, else a square). Gradients are the caller's business.
    """
    y = trunk.forward_features(x)
    if y.ndim == 4:
        if getattr(trunk, "output_fmt", "NCHW") == "NHWC":
            y = y.permute(0, 3, 1, 2)
        return y
    if y.ndim != 3:
        raise ValueError(f"forward_features returned shape {tuple(y.shape)}; expected "
                         "[N, C, h, w] feature maps or [N, T, C] tokens")
    prefix = int(getattr(trunk, "num_prefix_tokens", 0))
    patches = y[:, prefix:]
    n, t, c = patches.shape
    grid = getattr(getattr(trunk, "patch_embed", None), "grid_size", None)
    if grid is not None:
        gh, gw = int(grid[0]), int(grid[1])
    else:
        gh = gw = math.isqrt(t)
    if gh * gw != t:
        raise ValueError(f"forward_features returned shape {tuple(y.shape)}: {t} patch tokens after "
                         f"{prefix} prefix tokens do not fill a {gh}x{gw} patch grid")
    return patches.reshape(n, gh, gw, c).permute(0, 3, 1, 2)


def rmac(features: torch.Tensor, levels: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """float32 [N, C] R-MAC of feature maps [N, C, h, w]; rows are unit vectors.

    Per region of `region_grid(h, w, levels)`: the channel-wise max, divided by (its L2 norm +
    eps); the sum over regions, L2-normalised. Any sign of activation is fine (max is max).
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 4:
        shape = tuple(features.shape) if hasattr(features, "shape") else type(features).__name__
        raise ValueError(f"features must be a [N, C, h, w] tensor, got {shape}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    features = features.float()
    n, c, h, w = features.shape
    total = torch.zeros(n, c, dtype=torch.float32, device=features.device)
    for y0, x0, y1, x1 in region_grid(h, w, levels):
        mac = features[:, :, y0:y1, x0:x1].amax(dim=(2, 3))
        total += mac / (mac.norm(dim=1, keepdim=True) + eps)
    return torch.nn.functional.normalize(total, dim=1, eps=eps)


@dataclass(frozen=True)
class Whitening:
    """A learned PCA-whitening: x -> (x - mean) @ projection, rows L2-normalised."""
    mean: np.ndarray         # float32 [C], the mean of the descriptors it was learned on
    projection: np.ndarray   # float32 [C, dim], eigenvectors / sqrt(shrunk eigenvalue), largest first

    def __post_init__(self):
        mean = np.asarray(self.mean, dtype=np.float32)
        projection = np.asarray(self.projection, dtype=np.float32)
        if mean.ndim != 1 or projection.ndim != 2 or projection.shape[0] != mean.shape[0]:
            raise ValueError(f"mean must be [C] and projection [C, dim], got {mean.shape} and "
                             f"{projection.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "projection", projection)

    @property
    def dim(self) -> int:
        return self.projection.shape[1]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float32 [N, dim]: descriptors x [N, C] whitened, rows L2-normalised (zero rows stay 0)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x must be [N, {self.mean.shape[0]}], got {x.shape}")
        y = (x - self.mean) @ self.projection
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.maximum(norms, 1e-12)).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (np.savez, Arrow, a broadcast) from which `from_arrays` rebuilds it."""
        return {"mean": self.mean.copy(), "projection": self.projection.copy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Whitening":
        missing = {"mean", "projection"} - set(arrays)
        if missing:
            raise ValueError(f"arrays lack {sorted(missing)}; got keys {sorted(arrays)}")
        return cls(mean=np.array(arrays["mean"]), projection=np.array(arrays["projection"]))


def fit_whitening(x: np.ndarray, dim: int | None = None, shrinkage: float = 0.1) -> Whitening:
    """PCA-whitening learned on descriptors x [n, C] (rows), keeping `dim` components.

    Eigenvectors of the covariance of x, by decreasing eigenvalue, each scaled by
    1 / sqrt(eigenvalue + shrinkage * mean eigenvalue). `dim` None keeps min(C, n - 1), all the
    directions n descriptors can span.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be [n, C] descriptors, got shape {x.shape}")
    n, c = x.shape
    most = min(c, n - 1)
    if n < 2 or (dim is not None and not 1 <= dim <= most):
        raise ValueError(f"need n >= 2 descriptors and dim in [1, min(C, n - 1)]; got n={n}, C={c}, "
                         f"dim={dim}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has non-finite values")
    if not shrinkage >= 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage!r}")
    dim = most if dim is None else int(dim)
    mean = x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False).reshape(c, c))
    order = np.argsort(eigenvalues)[::-1][:dim]
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    scale = eigenvalues[order] + shrinkage * eigenvalues.mean()
    if eigenvalues.max() == 0 or np.any(scale <= 1e-12 * eigenvalues.max()):
        raise ValueError(f"the {n} descriptors span fewer than dim={dim} directions; lower dim or "
                         f"use shrinkage > 0 (got {shrinkage})")
    projection = eigenvectors[:, order] / np.sqrt(scale)
    return Whitening(mean=mean.astype(np.float32), projection=projection.astype(np.float32))
