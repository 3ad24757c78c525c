"""Exports are timm models: `timm.create_model("local-dir:DIR", pretrained=True)` loads them with
every weight, and gives the same outputs as load_exported and as the model that was exported."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from trainer.export import export_model, load_exported, load_model, read_export_meta
from trainer.models import create_model

LABELS = ["cat", "dog", "truck", "flower", "sunset"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def trained_like(name: str, head: str, img_size: int):
    """A Classifier whose every tensor (BN running statistics included) is moved off its init, so a
    tensor that is not loaded, or loaded into the wrong place, changes the outputs."""
    torch.manual_seed(0)
    model = create_model(name, len(LABELS), head, img_size)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.1)  # positive: running_var stays positive
    return model.eval()


def export(model, name, head, img_size, out):
    rng = torch.get_rng_state()
    export_model(model, out, {"model": name, "head": head, "num_classes": len(LABELS), "labels": LABELS,
                              "img_size": img_size, "input_size": [3, img_size, img_size], "mean": MEAN,
                              "std": STD, "config": {"loss": "softmax", "vocab": "somewhere"}})
    assert torch.equal(torch.get_rng_state(), rng)  # exporting leaves the caller's RNG alone
    return out


@pytest.mark.parametrize("name,img_size,classifier", [("regnety_002", 64, "head.fc"),
                                                      ("vit_tiny_patch16_224", 32, "head")])
def test_linear_head_export_is_the_timm_classifier(tmp_path, name, img_size, classifier):
    model = trained_like(name, "linear", img_size)
    d = export(model, name, "linear", img_size, tmp_path / "export")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.json", "model.safetensors"]
    net = timm.create_model(f"local-dir:{d}", pretrained=True).eval()
    # every tensor of timm's own num_classes=C model, under timm's names, and nothing else
    with torch.device("meta"):
        want = timm.create_model(name, pretrained=False, num_classes=len(LABELS),
                                 **({"img_size": img_size} if name.startswith("vit") else {})).state_dict()
    weights = load_file(str(d / "model.safetensors"))
    assert set(weights) == set(want) and not any(k.startswith("trunk.") for k in weights)
    ours = model.state_dict()
    assert {k: tuple(v.shape) for k, v in weights.items()} == {k: tuple(v.shape) for k, v in want.items()}
    assert torch.equal(weights[f"{classifier}.weight"], ours["head.weight"])
    for k, v in ours.items():
        if k.startswith("trunk."):
            assert torch.equal(weights[k[len("trunk."):]], v), k
    x = torch.rand(3, 3, img_size, img_size)
    loaded, meta = load_exported(d)
    loaded.eval()
    with torch.no_grad():
        want_logits = model(x)
        torch.testing.assert_close(net(x), want_logits)
        torch.testing.assert_close(loaded(x), want_logits)
        torch.testing.assert_close(loaded.trunk(x), model.trunk(x))  # the trunk: pooled features, as before
    assert loaded.trunk.num_classes == 0 and loaded.head.out_features == len(LABELS)
    assert set(loaded.trunk.state_dict()) == set(model.trunk.state_dict())
    # timm's own view of the export: labels, preprocessing
    assert net.pretrained_cfg["label_names"] == LABELS and net.num_classes == len(LABELS)
    dc = timm.data.resolve_data_config({}, model=net)
    assert dc["input_size"] == (3, img_size, img_size) and list(dc["mean"]) == MEAN and list(dc["std"]) == STD
    assert dc["crop_pct"] == 1.0  # resize the shorter side then center crop, as trainer.data.transforms does
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architecture"] == name and cfg["num_classes"] == len(LABELS) and cfg["label_names"] == LABELS
    assert cfg["num_features"] == model.trunk.num_features and "tag" not in cfg["pretrained_cfg"]
    # each fact once: model.json holds only what timm has no field for
    assert json.loads((d / "model.json").read_text()) == {"head": "linear",
                                                          "config": {"loss": "softmax", "vocab": "somewhere"}}
    assert meta == {"model": name, "head": "linear", "num_classes": len(LABELS), "labels": LABELS,
                    "img_size": img_size, "input_size": [3, img_size, img_size], "mean": MEAN, "std": STD,
                    "config": {"loss": "softmax", "vocab": "somewhere"}}
    m = load_model(str(d))
    assert m.name == name and m.mean == tuple(MEAN) and m.meta["labels"] == LABELS


def test_mlp_head_exports_a_timm_trunk_and_a_head_file(tmp_path):
    model = trained_like("regnety_002", "mlp", 64)
    d = export(model, "regnety_002", "mlp", 64, tmp_path / "export")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "head.safetensors", "model.json",
                                                   "model.safetensors"]
    trunk = timm.create_model(f"local-dir:{d}", pretrained=True).eval()
    assert trunk.num_classes == 0
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), model.trunk(x))
    assert set(load_file(str(d / "head.safetensors"))) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    loaded, meta = load_exported(d)
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert isinstance(loaded.head[1], torch.nn.Tanh) and meta["labels"] == LABELS and meta["num_classes"] == 5
    assert json.loads((d / "config.json").read_text())["num_classes"] == 0
    (d / "head.safetensors").unlink()
    with pytest.raises(ValueError, match="head.safetensors"):
        load_exported(d)


def test_bad_exports_and_bad_meta_are_refused(tmp_path):
    model = trained_like("regnety_002", "linear", 64)
    d = export(model, "regnety_002", "linear", 64, tmp_path / "export")
    # the layout before timm's: trunk./head. keys, no config.json
    old = tmp_path / "old"
    old.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(old / "model.safetensors"))
    (old / "model.json").write_text(json.dumps({"model": "regnety_002", "head": "linear", "num_classes": 5}))
    with pytest.raises(ValueError, match="re-export"):
        load_model(str(old))
    # weights that do not fit the config: timm's strict load, reported with the directory
    w = load_file(str(d / "model.safetensors"))
    w.pop("head.fc.bias")
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=f"{d}: timm cannot load"):
        load_exported(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        read_export_meta(d)
    meta = {"model": "regnety_002", "head": "linear", "num_classes": 5, "labels": LABELS[:3], "img_size": 64}
    with pytest.raises(ValueError, match="3 labels for 5 classes"):
        export_model(model, tmp_path / "x", meta)
    with pytest.raises(ValueError, match="not a 'mlp' head"):
        export_model(model, tmp_path / "x", {**meta, "labels": LABELS, "head": "mlp"})
    with pytest.raises(ValueError, match="names vit_tiny_patch16_224"):
        export_model(model, tmp_path / "x", {**meta, "labels": LABELS, "model": "vit_tiny_patch16_224"})
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
