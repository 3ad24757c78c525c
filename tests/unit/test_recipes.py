"""One table of optimizer recipes (trainer/recipes.py): every trainer's config defaults, the
optimizers built and the YAML configs agree with it."""
import dataclasses
import importlib
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from tests.helpers import ROOT
from trainer.config import from_dict
from trainer.optim import build_optimizer, peak_lr
from trainer.recipes import RECIPES, recipe

RECIPE_KEYS = ("weight_decay", "base_lr", "warmup_frac")


def trainers() -> dict:
    """Config class -> (its default recipe, the recipes it accepts)."""
    pretrain, swav, lit, mae, finetune = (importlib.import_module(m) for m in (
        "trainer.pretrain", "trainer.swav.train", "trainer.lit.train", "trainer.mae.train", "transfer.finetune"))

    def default(cls):
        return next(f.default for f in dataclasses.fields(cls) if f.name == "recipe")

    return {pretrain.PretrainConfig: (default(pretrain.PretrainConfig), pretrain.ALLOWED_RECIPES),
            swav.SwavConfig: (default(swav.SwavConfig), swav.ALLOWED_RECIPES),
            lit.LitConfig: (default(lit.LitConfig), lit.ALLOWED_RECIPES),
            mae.MaeConfig: (mae.RECIPE, (mae.RECIPE,)),
            finetune.FinetuneConfig: (finetune.RECIPE, (finetune.RECIPE,))}


@pytest.mark.parametrize("cls", list(trainers()), ids=lambda c: c.__name__)
def test_config_defaults_are_the_recipe_table(cls):
    name, allowed = trainers()[cls]
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for k in RECIPE_KEYS:
        if k in defaults:  # null means "the recipe's"; anything else must be the recipe's own value
            assert defaults[k] is None or defaults[k] == getattr(recipe(name), k), (cls.__name__, k, defaults[k])
    # warm-up is a plain number in the config: every recipe a trainer accepts must share its default,
    # so recipe=OTHER never trains with the first recipe's warm-up
    assert {recipe(n).warmup_frac for n in allowed} == {defaults["warmup_frac"]}, cls.__name__
    assert set(allowed) <= set(RECIPES)


def test_swav_and_seer_weight_decay():
    # SwAV's ImageNet runs: 1e-6 (main_swav.py); SEER's 1B-image runs: 1e-5 (VISSL's SEER configs)
    assert (recipe("swav").weight_decay, recipe("seer").weight_decay) == (1e-6, 1e-5)
    assert peak_lr("swav", 4096) == pytest.approx(4.8) and peak_lr("seer", 8192) == pytest.approx(9.6)
    with pytest.raises(ValueError, match="unknown recipe 'lars'; valid: sgd, adamw, mae, swav, seer, lit, finetune"):
        recipe("lars")


@pytest.mark.parametrize("name", list(RECIPES))
def test_optimizer_is_built_from_its_row(name):
    r = recipe(name)
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(name, m, lr=0.5)
    kind = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}.get(r.optimizer)
    assert type(opt).__name__ == ("Lars" if kind is None else kind.__name__)
    g = opt.param_groups[0]
    assert g["lr"] == 0.5 and g["weight_decay"] == r.weight_decay
    assert len(opt.param_groups) == (2 if r.exclude_norms_and_biases else 1)
    if r.optimizer == "adamw":
        assert g["betas"] == r.betas
    else:
        assert g["momentum"] == r.momentum
    if r.optimizer == "lars":
        assert g["trust_coeff"] == r.trust_coeff
    if r.optimizer == "sgd":
        assert g["nesterov"] == r.nesterov
    assert build_optimizer(name, m, lr=0.5, weight_decay=0.25).param_groups[0]["weight_decay"] == 0.25


def yaml_config_class(path: Path):
    from trainer.lit import LitConfig
    from trainer.mae import MaeConfig
    from trainer.pretrain import PretrainConfig
    from trainer.swav import SwavConfig

    prefix = path.name.split("_")[0]
    return {"swav": SwavConfig, "mae": MaeConfig, "lit": LitConfig}.get(prefix, PretrainConfig)


@pytest.mark.parametrize("path", sorted((ROOT / "trainer" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_configs_load_and_repeat_no_recipe_value(path):
    values = yaml.safe_load(path.read_text())
    cls = yaml_config_class(path)
    required = {"shards": "s", "run_dir": "r", "total_samples": values.get("batch_size", 256),
                "image_tower": "t"}
    fields = {f.name for f in dataclasses.fields(cls)}
    cfg = from_dict(cls, {**{k: v for k, v in required.items() if k in fields}, **values})
    name = getattr(cfg, "recipe", trainers()[cls][0])
    # a value the recipe already gives is the recipe's fact: written again here, the two can drift
    repeated = [k for k in RECIPE_KEYS if k in values and values[k] == getattr(recipe(name), k)]
    assert not repeated, f"{path.name} repeats recipe {name!r}'s {repeated}"
