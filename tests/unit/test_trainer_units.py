"""Schedule, parameter groups, loss, checkpoints and config: hand computations."""
import dataclasses
import math

import pytest
import torch
from torch import nn

from tests.helpers.ckptkit import tiny_checkpoint
from trainer.checkpoint import (BadSampleTally, Checkpoint, CheckpointVersionError, Layout, LoaderPosition,
                                list_checkpoints, load_latest, read_checkpoint, save_checkpoint)
from trainer.config import from_dict, load_config
from trainer.losses import sigmoid_bce, softmax_ce
from trainer.models import create_model
from trainer.optim import lr_at, param_groups, peak_lr
from trainer.pretrain import PretrainConfig


def test_schedule_warmup_peak_and_end():
    peak, total = 0.4, 1000
    assert lr_at(0, total, peak) == pytest.approx(0.04)              # starts at peak / 10
    assert lr_at(25, total, peak) == pytest.approx(0.04 + 0.36 * 0.5)  # linear over 5%
    assert lr_at(50, total, peak) == pytest.approx(peak)             # peak at the end of warm-up
    assert lr_at(50 + 475, total, peak) == pytest.approx(peak / 2)   # half-cosine midpoint
    assert lr_at(total, total, peak) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(10 * total, total, peak) == pytest.approx(0.0, abs=1e-12)


def test_linear_scaling():
    assert peak_lr("sgd", 256) == pytest.approx(0.1)
    assert peak_lr("sgd", 4096) == pytest.approx(1.6)
    assert peak_lr("adamw", 8192) == pytest.approx(4e-4)
    assert peak_lr("adamw", 2048) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="valid: sgd, adamw"):
        peak_lr("lamb", 256)


def test_no_weight_decay_on_norm_and_bias():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4), nn.Linear(4, 2))
    decay, rest = param_groups(m, 1e-5)
    assert decay["weight_decay"] == 1e-5 and rest["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(m[0].weight), id(m[4].weight)}
    assert ids(rest["params"]) == {id(m[0].bias), id(m[1].weight), id(m[1].bias), id(m[3].weight),
                                   id(m[3].bias), id(m[4].bias)}


def test_softmax_loss_against_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])  # 1/k over k labels
    z = math.log(math.exp(2) + 1 + math.exp(-1))
    first = -(0.5 * (2 - z) + 0.5 * (0 - z))
    second = math.log(3)
    assert softmax_ce(logits, target).item() == pytest.approx((first + second) / 2, rel=1e-6)
    bce = sigmoid_bce(logits, target).item()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    hand = -(math.log(sig(2)) + math.log(sig(0)) + math.log(1 - sig(-1)) + 2 * math.log(0.5) + math.log(0.5)) / 6
    assert bce == pytest.approx(hand, rel=1e-6)


def test_models_and_heads():
    m = create_model("regnety_002", 7, "mlp")
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert isinstance(m.head[1], nn.Tanh)
    v = create_model("vit_tiny_patch16_224", 5, "linear", img_size=32)
    assert v(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("resnet_does_not_exist", 5)
    with pytest.raises(ValueError, match="valid: linear, mlp"):
        create_model("regnety_002", 5, "transformer")


def test_corrupt_latest_checkpoint_falls_back(tmp_path, caplog):
    for step in (4, 8, 12):
        save_checkpoint(tmp_path, tiny_checkpoint(step, w=torch.full((3,), float(step))), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000008.pt", "ckpt-000000012.pt"]
    latest = tmp_path / "ckpt-000000012.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    state = load_latest(tmp_path)
    assert state.step == 8 and torch.equal(state.model["w"], torch.full((3,), 8.0))
    assert "unreadable" in caplog.text


def test_config_yaml_overrides_and_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: regnety_002\nbatch_size: 64\ntotal_samples: 640\n")
    cfg = load_config(PretrainConfig, ["--config", str(f), "shards=s", "run_dir=r", "base_lr=0.2", "compile=true"])
    assert (cfg.model, cfg.batch_size, cfg.base_lr, cfg.compile, cfg.steps) == ("regnety_002", 64, 0.2, True, 10)
    with pytest.raises(ValueError, match=r"unknown config keys \['lr'\]"):  # the library path: from_dict
        from_dict(PretrainConfig, dict(shards="s", run_dir="r", total_samples=10, lr=0.1))
    with pytest.raises(ValueError, match="base_lr must be > 0"):
        from_dict(PretrainConfig, dict(shards="s", run_dir="r", total_samples=10, batch_size=2, base_lr=0))
    with pytest.raises(ValueError, match="valid: softmax, bce"):
        from_dict(PretrainConfig, dict(shards="s", run_dir="r", total_samples=10, batch_size=2, loss="mse"))


def test_config_values_take_the_declared_type(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("model: regnety_002\nbatch_size: 64\ntotal_samples: 640\n")
    base = ["--config", str(f), "shards=s", "run_dir=r"]
    cfg = load_config(PretrainConfig, base + ["base_lr=1e-3", "weight_decay=0"])  # YAML 1.1: 1e-3 is a string
    assert cfg.base_lr == 0.001 and isinstance(cfg.weight_decay, float)
    assert load_config(PretrainConfig, base + ["run_dir=2024"]).run_dir == "2024"  # a name, not a number
    for bad, key in (("base_lr=fast", "base_lr"), ("batch_size=6.5", "batch_size"), ("batch_size=true", "batch_size"),
                     ("compile=maybe", "compile")):
        with pytest.raises(SystemExit) as e:  # on the command line: a usage message, exit 2
            load_config(PretrainConfig, base + [bad])
        assert e.value.code == 2 and f"config key '{key}'" in capsys.readouterr().err


def test_model_data_config_from_timm():
    from trainer.data import model_data_config

    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = model_data_config("resnet18")
    assert (cfg.mean, cfg.std, cfg.input_size) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 224)
    assert model_data_config("vit_base_patch16_384").mean == (0.5, 0.5, 0.5)
    assert model_data_config("vit_base_patch16_384").input_size == 384


def full_checkpoint(step: int = 5) -> Checkpoint:
    """A record with every member live: a trained Linear, its SGD momentum, an fp16 scaler's state."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return Checkpoint(step=step, samples=step * 8, model=model.state_dict(), optimizer=opt.state_dict(),
                      scaler={"scale": 65536.0, "_growth_tracker": 2}, rng_cpu=torch.get_rng_state(),
                      config={"batch_size": 8, "precision": "fp16"}, task_state={"ema": {"updates": 5}},
                      loader=LoaderPosition(1, 2), layout=Layout.of(8, 2, 1),
                      bad_samples=BadSampleTally(2, ("s.tar:a: cut short", "s.tar:b: not a JPEG")))


def same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_checkpoint_record_round_trips_through_its_file(tmp_path):
    want = full_checkpoint()
    path = save_checkpoint(tmp_path, want, keep=0)
    got = read_checkpoint(path)
    assert got.path == str(path) and path.name == "ckpt-000000005.pt"
    for f in dataclasses.fields(want):
        if f.name != "path":
            assert same_state(getattr(got, f.name), getattr(want, f.name)), f.name
    assert got.layout == Layout(world_size=2, batch_size=8, rank_batch=4, workers=1)
    assert load_latest(tmp_path).step == 5
    slim = got.without_weights()  # what a prepared run keeps: no second copy of the weights
    assert slim.model == slim.optimizer == slim.scaler == {} and slim.task_state == got.task_state


def test_checkpoint_of_another_version_is_refused_by_name(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, full_checkpoint(4), keep=0)
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "VERSION", 3)  # as a later version of this code writes it
        path = save_checkpoint(tmp_path, full_checkpoint(8), keep=0)
    with pytest.raises(CheckpointVersionError, match=r"ckpt-000000008\.pt: checkpoint format version 3, this code "
                                                     r"reads version 2"):
        read_checkpoint(path)
    for fresh_start in (False, True):  # not unreadable: never skipped for the older one, never set aside
        with pytest.raises(CheckpointVersionError, match="ckpt-000000008.pt"):
            load_latest(tmp_path, fresh_start)


def version_1_state(step: int, since_issue_16: bool) -> dict:
    """What trainer/loop.py wrote before the checkpoint had a record (and a version): the task's
    state under "extra"; before issue 16 no loader position, layout or bad samples."""
    state = {"step": step, "samples": step * 8, "model": {"w": torch.ones(2)}, "optimizer": {"state": {},
             "param_groups": []}, "scaler": {}, "rng_cpu": torch.get_rng_state(), "config": {"batch_size": 8},
             "extra": {"ema": {"updates": step}}}
    if since_issue_16:
        state.update(loader={"epoch": 0, "batch": step}, layout={"world_size": 1, "batch_size": 8, "rank_batch": 8,
                                                                 "workers": 2},
                     bad_samples={"count": 1, "names": ["s.tar:k: cut short"]})
    return state


def test_unversioned_checkpoints_are_version_1_and_load(tmp_path):
    for step, since_issue_16 in ((3, False), (6, True)):
        torch.save(version_1_state(step, since_issue_16), tmp_path / f"ckpt-{step:09d}.pt")
    old = read_checkpoint(tmp_path / "ckpt-000000003.pt")
    assert (old.step, old.task_state, old.loader, old.layout, old.bad_samples) == (3, {"ema": {"updates": 3}}, None,
                                                                                  None, BadSampleTally())
    new = load_latest(tmp_path)
    assert new.step == 6 and new.loader == LoaderPosition(0, 6) and new.layout == Layout.of(8, 1, 2)
    assert new.bad_samples == BadSampleTally(1, ("s.tar:k: cut short",)) and torch.equal(new.model["w"], torch.ones(2))
    save_checkpoint(tmp_path, new, keep=0)  # written again, it is the current version
    assert same_state(read_checkpoint(tmp_path / "ckpt-000000006.pt").to_state(), new.to_state())


def test_every_training_loader_implements_the_protocol():
    from bench.trainer_bench import PairedLoader, TimedLoader
    from trainer.data.ffcv_reader import FfcvLoader
    from trainer.data.protocol import TrainLoader
    from trainer.data.wds_reader import WdsLoader
    from trainer.lit.pairs import PairLoader
    from transfer.finetune import FinetuneLoader

    members = [n for n in vars(TrainLoader) if not n.startswith("_")] + ["__iter__"]
    assert sorted(members) == ["__iter__", "epoch_batches", "epoch_stats", "order_depends_on", "set_epoch"]
    for cls in (WdsLoader, FfcvLoader, FinetuneLoader, PairLoader, TimedLoader, PairedLoader):
        assert [m for m in members if not hasattr(cls, m)] == [], cls.__name__


def test_collective_failure_tells_gloo_timeouts_from_model_errors():
    from trainer.loop import collective_failure

    # the two messages a stalled peer gives under gloo (the second from DDP's buffer broadcast)
    assert collective_failure(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Timed out waiting 10000ms"))
    assert collective_failure(RuntimeError("Application timeout caused pair closure"))
    assert not collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x3 and 4x5)"))
    assert not collective_failure(ValueError("labels out of range"))
