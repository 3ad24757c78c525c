"""MAE pieces against independent computations: masking counts, the normalized-pixel target
(numpy loops), the masked loss, the encoder against timm's own forward, and init_from."""
import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from trainer.mae.init_from import load_encoder
from trainer.mae.export import export_mae, load_mae
from trainer.mae.model import (DecoderSpec, build_mae, mask_noise, norm_pix_target, patchify, random_masking,
                               unpatchify)
from trainer.models import create_model

TINY = DecoderSpec(depth=1, width=32, heads=2)


@pytest.mark.parametrize("num_patches,expected_visible", [(16, 4), (49, 12), (196, 49), (10, 2)])
def test_masking_keeps_exactly_the_right_number_per_image(num_patches, expected_visible):
    # expected: round(L * 0.25), computed by hand: 4, 12.25 -> 12, 49, 2.5 -> 2 (banker's rounding of 2.5)
    noise = torch.rand(6, num_patches, generator=torch.Generator().manual_seed(1))
    ids_keep, mask, ids_restore = random_masking(noise, 0.75)
    assert ids_keep.shape == (6, expected_visible)
    assert (mask.sum(dim=1) == num_patches - expected_visible).all()
    for b in range(6):
        visible = set(torch.nonzero(mask[b] == 0).flatten().tolist())
        assert visible == set(ids_keep[b].tolist())  # the encoder gets exactly the unmasked patches
        # the visible ones are the patches with the smallest noise
        assert visible == set(np.argsort(noise[b].numpy(), kind="stable")[:expected_visible].tolist())
    assert len({tuple(sorted(r.tolist())) for r in ids_keep}) == 6  # different patches per image
    # ids_restore puts the decoder's [visible tokens, mask tokens] sequence back in patch order:
    # each visible token at its own patch, a mask token (-1 here) at every masked patch
    seq = torch.cat([ids_keep, torch.full((6, num_patches - expected_visible), -1)], dim=1)
    want = torch.where(mask == 0, torch.arange(num_patches).expand(6, -1), torch.tensor(-1))
    assert torch.equal(torch.gather(seq, 1, ids_restore), want)


def test_mask_noise_is_a_function_of_seed_step_rank():
    a = mask_noise(0, 5, 1, 4, 16)
    assert torch.equal(a, mask_noise(0, 5, 1, 4, 16))
    assert not torch.equal(a, mask_noise(0, 5, 0, 4, 16)) and not torch.equal(a, mask_noise(0, 6, 1, 4, 16))


def test_normalized_pixel_target_matches_hand_computation():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 3, 4, 6)).astype(np.float32)  # 2x3 patches of 2x2 pixels
    p, eps = 2, 1e-6
    want = []
    for i in range(2):          # patch rows, then columns: timm's token order
        for j in range(3):
            vals = [img[0, c, i * p + r, j * p + q] for r in range(p) for q in range(p) for c in range(3)]
            v = np.array(vals, dtype=np.float64)
            want.append((v - v.mean()) / np.sqrt(v.var(ddof=1) + eps))  # MAE: torch.var, unbiased
    got = norm_pix_target(patchify(torch.from_numpy(img), p))[0].numpy()
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-5)
    x = torch.from_numpy(img)
    assert torch.equal(unpatchify(patchify(x, p), p, 4, 6), x)


def test_loss_is_the_mean_squared_error_on_masked_patches_only():
    torch.manual_seed(0)
    mae = build_mae("test_vit", 64, TINY)
    x = torch.randn(3, 3, 64, 64)
    loss, pred, mask = mae(x, mask_noise(0, 0, 0, 3, 16))
    target = norm_pix_target(patchify(x, 16)).numpy()
    err = ((pred.detach().numpy() - target) ** 2).mean(axis=-1)
    m = mask.numpy().astype(bool)
    assert m.sum() == 3 * 12
    assert float(loss) == pytest.approx(err[m].mean(), rel=1e-5)
    assert float(loss) != pytest.approx(err.mean(), rel=1e-3)  # the visible patches are not in it


@pytest.mark.parametrize("name", ["test_vit", "test_vit2", "test_vit3"])  # cls token; register token; map pool
def test_encoder_sees_only_visible_patches_and_equals_timm_when_nothing_is_masked(name):
    torch.manual_seed(0)
    mae = build_mae(name, 64, TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        everything = mae.encode(x, torch.arange(16).expand(2, -1))
        torch.testing.assert_close(everything, mae.encoder.forward_features(x))
        ids_keep, _, _ = random_masking(mask_noise(0, 0, 0, 2, 16), 0.75)
        assert mae.encode(x, ids_keep).shape == (2, mae.encoder.num_prefix_tokens + 4, mae.encoder.embed_dim)


def test_only_vision_transformers():
    with pytest.raises(ValueError, match="VisionTransformer"):
        build_mae("regnety_002", 64, TINY)
    with pytest.raises(ValueError, match="divisible"):
        DecoderSpec(depth=1, width=30, heads=4)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    mae = build_mae("test_vit", 64, TINY)
    out = tmp_path_factory.mktemp("mae") / "export"
    export_mae(mae, out, "test_vit", 64, TINY, {"mean": [0.5] * 3, "std": [0.5] * 3})
    return mae, out


def test_export_round_trip_keeps_encoder_and_decoder(export):
    mae, out = export
    meta = json.loads((out / "mae.json").read_text())
    assert (meta["model"], meta["img_size"], meta["patch_size"], meta["decoder"]["width"]) == ("test_vit", 64, 16, 32)
    back, _ = load_mae(out)
    for a, b in ((mae.encoder, back.encoder), (mae.decoder, back.decoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_encoder_loads_into_timm_vit_with_no_missing_trunk_keys(export):
    mae, out = export
    # the trunk as trainer.models builds it for vit_* names (it passes img_size only to those)
    trunk = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=64)
    fresh = {k: v.clone() for k, v in trunk.state_dict().items()}
    report = load_encoder(trunk, out)
    assert report.missing == () and report.unexpected == () and report.resized == ()
    assert report.loaded == len(fresh) == len(timm.create_model("test_vit", num_classes=0).state_dict())
    want = mae.encoder.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in trunk.state_dict().items())
    assert not torch.equal(fresh["blocks.0.attn.qkv.weight"], want["blocks.0.attn.qkv.weight"])
    # at another resolution the position embedding is resampled (timm's resample_abs_pos_embed), the rest loads
    big = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=96)
    report = load_encoder(big, out)
    assert report.resized == ("pos_embed",) and report.missing == ()
    assert big.pos_embed.shape == (1, 1 + 36, 64)
    assert torch.equal(big.pos_embed[:, :1], want["pos_embed"][:, :1])  # the class token's position is kept


def test_mismatched_exports_are_refused_or_reported(export, tmp_path):
    _, out = export
    with pytest.raises(ValueError, match="the MAE encoder is test_vit but the model to initialise is test_vit2"):
        load_encoder(create_model("test_vit2", 5, "linear", 64).trunk, out)
    with pytest.raises(ValueError, match="is test_vit but the model to initialise is regnety_002"):
        load_encoder(create_model("regnety_002", 5, "linear", 64).trunk, out)
    with pytest.raises(ValueError, match="not an MAE export"):
        load_encoder(create_model("test_vit", 5, "linear", 64).trunk, tmp_path)
    # a tensor dropped and a foreign one added: both reported, by name
    bad = tmp_path / "bad"
    bad.mkdir()
    state = load_file(str(out / "encoder.safetensors"))
    del state["blocks.5.mlp.fc2.bias"]
    state["decoder_only.weight"] = torch.zeros(2)
    save_file(state, str(bad / "encoder.safetensors"))
    (bad / "mae.json").write_text((out / "mae.json").read_text())
    report = load_encoder(create_model("test_vit", 5, "linear", 64).trunk, bad)
    assert report.missing == ("blocks.5.mlp.fc2.bias",) and report.unexpected == ("decoder_only.weight",)
    # a tensor of the wrong shape is an error naming it
    state = load_file(str(out / "encoder.safetensors"))
    state["blocks.0.attn.qkv.weight"] = torch.zeros(10, 64)
    save_file(state, str(bad / "encoder.safetensors"))
    with pytest.raises(ValueError, match=r"blocks.0.attn.qkv.weight: export \(10, 64\) vs model \(192, 64\)"):
        load_encoder(create_model("test_vit", 5, "linear", 64).trunk, bad)
