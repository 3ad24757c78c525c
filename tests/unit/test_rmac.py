"""R-MAC regions, descriptors, feature maps of real timm trunks, and PCA-whitening.

Expectations are computed here: region grids by hand from Tolias' formulas, R-MAC by a
per-image, per-region loop and by a transcription of the reference implementation
(cnnimageretrieval-pytorch `rmac`), whitening against an SVD of the centred data.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from dedup.rmac import Whitening, feature_map, fit_whitening, region_grid, rmac


def squares(side: int, starts_y: list[int], starts_x: list[int]) -> list[tuple[int, int, int, int]]:
    """Square regions of `side` at every (y, x) start, row-major (as the grid lists them)."""
    return [(y, x, y + side, x + side) for y in starts_y for x in starts_x]


# --- region_grid -------------------------------------------------------------------------------

def test_region_grid_square_7x7_by_hand():
    # w = 7, square so no extra positions (Wd = Hd = 0).
    # l=1: wl = floor(14/2) = 7, wl2 = floor(3.5-1) = 2, one position (b = 0): floor(2) - 2 = 0
    # l=2: wl = floor(14/3) = 4, wl2 = floor(2-1) = 1, b = (7-4)/1 = 3: floor(1 + [0,1]*3) - 1 = [0, 3]
    # l=3: wl = floor(14/4) = 3, wl2 = floor(1.5-1) = 0, b = (7-3)/2 = 2: floor([0,2,4]) = [0, 2, 4]
    expected = [(0, 0, 7, 7)] + squares(7, [0], [0]) + squares(4, [0, 3], [0, 3]) \
        + squares(3, [0, 2, 4], [0, 2, 4])
    assert region_grid(7, 7, levels=3) == expected


def test_region_grid_tiny_2x2_keeps_duplicates_by_hand():
    # w = 2. l=1: wl = 2, wl2 = floor(0) = 0, start 0.
    # l=2: wl = floor(4/3) = 1, wl2 = floor(-0.5) = -1, b = (2-1)/1 = 1: floor(-1 + [0,1]) + 1 = [0, 1]
    # l=3: wl = floor(4/4) = 1, wl2 = -1, b = (2-1)/2 = 0.5: floor(-1 + [0,.5,1]) + 1 = [0, 0, 1]
    expected = [(0, 0, 2, 2)] + squares(2, [0], [0]) + squares(1, [0, 1], [0, 1]) \
        + squares(1, [0, 0, 1], [0, 0, 1])
    assert region_grid(2, 2, levels=3) == expected


def test_region_grid_wide_5x9_extra_positions_on_long_side_by_hand():
    # w = 5, b = (9-5)/(steps-1) = 4/[1..6]; overlap (25 - 5b)/25 = [0.2, 0.6, 0.73, ...]:
    # |. - 0.4| is smallest (0.2, the tie broken by float32 towards the first) at steps = 2: Wd = 1.
    # l=1: wl = 5, wl2 = floor(1.5) = 1; x: 2 positions, b = 4/1: floor(1 + [0,4]) - 1 = [0, 4]; y: [0]
    # l=2: wl = floor(10/3) = 3, wl2 = 0; x: 3, b = 6/2 = 3: [0, 3, 6]; y: 2, b = 2/1: [0, 2]
    # l=3: wl = floor(10/4) = 2, wl2 = 0; x: 4, b = 7/3: floor([0, 2.33, 4.67, 7]) = [0, 2, 4, 7];
    #      y: 3, b = 3/2: floor([0, 1.5, 3]) = [0, 1, 3]
    expected = [(0, 0, 5, 9)] + squares(5, [0], [0, 4]) + squares(3, [0, 2], [0, 3, 6]) \
        + squares(2, [0, 1, 3], [0, 2, 4, 7])
    assert region_grid(5, 9, levels=3) == expected
    # Tall maps get the extra positions on their long side: the same regions, transposed (listed
    # row-major, so in another order).
    transposed = [(x0, y0, x1, y1) for y0, x0, y1, x1 in expected]
    assert sorted(region_grid(9, 5, levels=3)) == sorted(transposed)


def test_region_grid_overlap_picks_the_extra_positions_by_hand():
    # 5x9 at overlap 0.7: |[0.2, 0.6, 0.733, 0.8, ...] - 0.7| is smallest at steps = 4: Wd = 3.
    # l=1: wl = 5, wl2 = 1, x: 4 positions, b = 4/3: floor(1 + [0, 1.33, 2.67, 4]) - 1 = [0, 1, 2, 4]
    assert region_grid(5, 9, levels=1, overlap=0.7) == [(0, 0, 5, 9)] + squares(5, [0], [0, 1, 2, 4])


def test_region_grid_float32_rounding_as_the_reference():
    # 2x32, level 2: w = 2, steps = 7 is closest to overlap 0.4 (|1 - 5/2 - 0.4| = 1.9): Wd = 6,
    # so 8 positions; wl = floor(4/3) = 1, wl2 = -1, b = 31/7 = 4.428571...
    # Starts floor(-1 + k*b) + 1: k = 7 gives 31 in exact arithmetic, but the reference computes
    # in float32: 7 * 4.4285712 - 1 = 29.999998, floor 29, start 30.
    level2 = [r for r in region_grid(2, 32, levels=2) if r[2] - r[0] == 1]
    assert level2 == squares(1, [0, 1], [0, 4, 8, 13, 17, 22, 26, 30])


@pytest.mark.parametrize("height,width", [(1, 1), (1, 9), (3, 4), (7, 7), (6, 17), (23, 11), (32, 32)])
def test_region_grid_regions_inside_and_count_grows_with_levels(height, width):
    counts = []
    for levels in range(1, 6):
        regions = region_grid(height, width, levels)
        assert regions[0] == (0, 0, height, width)
        for y0, x0, y1, x1 in regions:
            assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        counts.append(len(regions))
    assert all(a <= b for a, b in zip(counts, counts[1:]))
    if min(height, width) >= 6:      # level 5's side floor(2w/6) >= 2: every level adds regions
        assert all(a < b for a, b in zip(counts, counts[1:]))
    if height == width == 32:        # whole map + l^2 regions at level l
        assert counts == [1 + sum(l * l for l in range(1, L + 1)) for L in range(1, 6)]


@pytest.mark.parametrize("kwargs,named", [
    (dict(height=0, width=4), "height"), (dict(height=4, width=-1), "width"),
    (dict(height=4, width=4, levels=0), "levels"), (dict(height=4, width=4, overlap=1.0), "overlap"),
    (dict(height=4, width=4, overlap=0.0), "overlap")])
def test_region_grid_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        region_grid(**kwargs)


# --- rmac --------------------------------------------------------------------------------------

def naive_rmac(features: torch.Tensor, levels: int, eps: float = 1e-6) -> torch.Tensor:
    """One image, one region at a time."""
    rows = []
    for image in features:
        total = torch.zeros(image.shape[0], dtype=torch.float64)
        for y0, x0, y1, x1 in region_grid(image.shape[1], image.shape[2], levels):
            mac = torch.amax(image[:, y0:y1, x0:x1].double(), dim=(1, 2))
            total += mac / (mac.norm() + eps)
        rows.append(total / total.norm())
    return torch.stack(rows).float()


def reference_rmac(x: torch.Tensor, L: int = 3, eps: float = 1e-6) -> torch.Tensor:
    """cnnimageretrieval-pytorch's rmac, transcribed (int() for the slice bounds)."""
    ovr = 0.4
    steps = torch.Tensor([2, 3, 4, 5, 6, 7])
    W = x.size(3)
    H = x.size(2)
    w = min(W, H)
    b = (max(H, W) - w) / (steps - 1)
    (tmp, idx) = torch.min(torch.abs(((w ** 2 - w * b) / w ** 2) - ovr), 0)
    Wd = Hd = 0
    if H < W:
        Wd = idx.item() + 1
    elif H > W:
        Hd = idx.item() + 1
    v = torch.nn.functional.max_pool2d(x, (x.size(-2), x.size(-1)))
    v = v / (torch.norm(v, p=2, dim=1, keepdim=True) + eps).expand_as(v)
    for l in range(1, L + 1):
        wl = math.floor(2 * w / (l + 1))
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if l + Wd == 1 else (W - wl) / (l + Wd - 1)
        cenW = torch.floor(wl2 + torch.Tensor(range(l - 1 + Wd + 1)) * b) - wl2
        b = 0 if l + Hd == 1 else (H - wl) / (l + Hd - 1)
        cenH = torch.floor(wl2 + torch.Tensor(range(l - 1 + Hd + 1)) * b) - wl2
        for i_ in cenH.tolist():
            for j_ in cenW.tolist():
                if wl == 0:
                    continue
                i_, j_ = int(i_), int(j_)
                R = x[:, :, i_:i_ + wl, j_:j_ + wl]
                vt = torch.nn.functional.max_pool2d(R, (R.size(-2), R.size(-1)))
                vt = vt / (torch.norm(vt, p=2, dim=1, keepdim=True) + eps).expand_as(vt)
                v += vt
    return v.flatten(1)


@pytest.mark.parametrize("shape", [(3, 16, 7, 7), (2, 8, 5, 9), (2, 8, 12, 4), (1, 5, 2, 2), (2, 6, 1, 1)])
@pytest.mark.parametrize("levels", [1, 3])
def test_rmac_matches_naive_loop_with_negative_values(shape, levels):
    torch.manual_seed(0)
    features = torch.randn(shape) - 0.5          # mostly negative activations, as ViT tokens
    got = rmac(features, levels=levels)
    assert got.shape == shape[:2] and got.dtype == torch.float32
    torch.testing.assert_close(got, naive_rmac(features, levels), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(shape[0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hw", [(7, 7), (5, 9), (13, 6), (10, 31), (3, 3), (2, 32)])
def test_rmac_matches_reference_transcription(hw):
    torch.manual_seed(1)
    features = torch.relu(torch.randn(2, 12, *hw))    # post-ReLU, as the reference's CNN maps
    expected = torch.nn.functional.normalize(reference_rmac(features, L=3), dim=1)
    torch.testing.assert_close(rmac(features, levels=3), expected, atol=1e-5, rtol=1e-5)


def test_rmac_scale_invariant_and_channel_equivariant():
    torch.manual_seed(2)
    features = torch.randn(4, 10, 6, 9)
    base = rmac(features)
    torch.testing.assert_close(rmac(3.7 * features), base, atol=1e-5, rtol=1e-5)
    perm = torch.randperm(10)
    torch.testing.assert_close(rmac(features[:, perm]), base[:, perm], atol=1e-6, rtol=0)
    # Each image's descriptor depends on that image only (vectorised over N without mixing).
    torch.testing.assert_close(rmac(features[2:3]), base[2:3], atol=1e-6, rtol=0)


def test_rmac_bad_input():
    with pytest.raises(ValueError, match="features"):
        rmac(torch.zeros(2, 8, 5))
    with pytest.raises(ValueError, match="levels"):
        rmac(torch.zeros(1, 2, 3, 3), levels=0)


# --- feature_map on real timm trunks -----------------------------------------------------------

def images(n: int = 2, size: int = 64) -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(n, 3, size, size)


@torch.no_grad()
def test_feature_map_cnn_is_the_nchw_map():
    trunk = timm.create_model("regnety_002", pretrained=False, num_classes=0).eval()
    x = images()
    got = feature_map(trunk, x)
    assert got.shape == (2, 368, 2, 2)
    torch.testing.assert_close(got, trunk.forward_features(x), atol=0, rtol=0)
    assert rmac(got).shape == (2, 368)


@torch.no_grad()
@pytest.mark.parametrize("reg_tokens,prefix", [(0, 1), (4, 5)])
def test_feature_map_vit_drops_prefix_tokens_and_lays_out_patch_grid(reg_tokens, prefix):
    trunk = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64,
                              reg_tokens=reg_tokens).eval()
    assert trunk.num_prefix_tokens == prefix
    x = images()
    tokens = trunk.forward_features(x)
    assert tokens.shape == (2, prefix + 16, 192)
    got = feature_map(trunk, x)
    assert got.shape == (2, 192, 4, 4)
    for n in range(2):                       # patch token t sits at row t // 4, column t % 4
        for t in range(16):
            torch.testing.assert_close(got[n, :, t // 4, t % 4], tokens[n, prefix + t], atol=0, rtol=0)


class TokensOfShape(torch.nn.Module):
    """A stand-in trunk whose forward_features returns a fixed shape: only for the error paths."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape
        self.num_prefix_tokens = 1

    def forward_features(self, x):
        return torch.zeros(self.shape)


@pytest.mark.parametrize("shape", [(2, 192), (2, 1, 4, 4, 8), (2, 1 + 15, 8)])
def test_feature_map_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match=r"shape \(" + ", ".join(map(str, shape))):
        feature_map(TokensOfShape(shape), images())


# --- PCA-whitening -----------------------------------------------------------------------------

def correlated(n: int = 2000, c: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((c, c)) * np.linspace(3.0, 0.2, c)[:, None]
    return rng.standard_normal((n, c)) @ mixing + rng.standard_normal(c) * 5


def test_whitening_makes_covariance_identity():
    x = correlated()
    w = fit_whitening(x, shrinkage=0.0)
    assert w.projection.shape == (8, 8) and w.projection.dtype == np.float32
    assert w.mean.dtype == np.float32
    np.testing.assert_allclose(w.mean, x.mean(axis=0), rtol=1e-5, atol=1e-4)
    whitened = (x - w.mean) @ w.projection
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(8), atol=0.05)
    assert np.abs(np.cov(x, rowvar=False) - np.eye(8)).max() > 1    # it was far from it


def test_whitening_with_shrinkage_keeps_eigen_order():
    x = correlated(seed=1)
    w = fit_whitening(x, shrinkage=0.1)
    centred = x - x.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)     # descending singular values
    eigenvalues = singular ** 2 / (len(x) - 1)
    expected_norms = 1 / np.sqrt(eigenvalues + 0.1 * eigenvalues.mean())
    np.testing.assert_allclose(np.linalg.norm(w.projection, axis=0), expected_norms, rtol=1e-4)
    directions = w.projection / np.linalg.norm(w.projection, axis=0)
    np.testing.assert_allclose(np.abs(np.sum(directions * vt.T, axis=0)), np.ones(8), atol=1e-4)
    # Whitened variances are eigenvalue / (eigenvalue + shrink): below 1, largest first.
    variances = np.var((x - w.mean) @ w.projection, axis=0, ddof=1)
    np.testing.assert_allclose(variances, eigenvalues * expected_norms ** 2, rtol=1e-3)
    assert np.all(np.diff(variances) < 0) and variances.max() < 1


def test_whitening_dim_truncation_and_unit_rows():
    x = correlated(seed=2)
    w = fit_whitening(x, dim=3)
    assert w.projection.shape == (8, 3) and w.dim == 3
    out = w.apply(x)
    assert out.shape == (2000, 3) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.ones(2000), atol=1e-5)
    centred = (x - x.mean(axis=0)) @ w.projection.astype(np.float64)    # centred on the fit's data
    np.testing.assert_allclose(out, centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-4)
    # The 3 kept columns are the full fit's first 3 (the largest eigenvalues).
    full = fit_whitening(x)
    np.testing.assert_allclose(np.abs(w.projection), np.abs(full.projection[:, :3]), rtol=1e-4, atol=1e-6)


def test_whitening_fewer_descriptors_than_dimensions():
    x = np.random.default_rng(3).standard_normal((6, 32))
    w = fit_whitening(x)                         # dim = n - 1 = 5
    assert w.projection.shape == (32, 5) and np.all(np.isfinite(w.projection))
    np.testing.assert_allclose(np.linalg.norm(w.apply(x), axis=1), np.ones(6), atol=1e-5)


def test_whitening_round_trip_through_plain_arrays(tmp_path):
    x = correlated(seed=4)
    w = fit_whitening(x, dim=5)
    arrays = w.to_arrays()
    assert set(arrays) == {"mean", "projection"} and all(isinstance(a, np.ndarray) for a in arrays.values())
    np.savez(tmp_path / "whitening.npz", **arrays)
    with np.load(tmp_path / "whitening.npz", allow_pickle=False) as f:
        back = Whitening.from_arrays(dict(f))
    np.testing.assert_array_equal(back.mean, w.mean)
    np.testing.assert_array_equal(back.projection, w.projection)
    np.testing.assert_array_equal(back.apply(x), w.apply(x))
    with pytest.raises(ValueError, match="projection"):
        Whitening.from_arrays({"mean": w.mean})


@pytest.mark.parametrize("n,c,dim,message", [
    (1, 8, None, "n=1"), (100, 8, 9, "dim=9"), (4, 8, 4, "dim=4"), (100, 8, 0, "dim=0")])
def test_whitening_bad_arguments(n, c, dim, message):
    x = np.random.default_rng(5).standard_normal((n, c))
    with pytest.raises(ValueError, match=message):
        fit_whitening(x, dim=dim)
    assert fit_whitening(np.random.default_rng(5).standard_normal((4, 8)), dim=3).dim == 3


def test_whitening_apply_checks_width():
    w = fit_whitening(correlated(n=50))
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        w.apply(np.zeros((3, 7)))
