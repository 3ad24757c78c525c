"""trainer.mae end to end on CPU: the loss falls, the outputs a person and trainer.pretrain use
are there, and (slow) a killed two-process torchrun run resumes to the same losses."""
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.helpers.launch import kill_when, start_torchrun, torchrun
from tests.helpers.runs import metrics
from tests.helpers.shardkit import write_shard_set

TINY = ["model=test_vit", "img_size=64", "decoder_depth=1", "decoder_width=64", "decoder_heads=4", "workers=1",
        "log_every=1", "seed=1"]


def gradient_shards(out: Path, n: int = 96, shard_size: int = 16, size: int = 72, seed: int = 0) -> Path:
    """Shards of linear colour ramps running left, right, up or down (random per image): a masked
    patch, normalized, is one of four patterns, which only the visible patches tell apart; so the
    loss can only fall well below that of a constant prediction (~1) if the encoder's view of the
    visible patches reaches the decoder. tests/helpers/shardkit's flat colours carry no such signal."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, size)
    members = []
    for i in range(n):
        direction = rng.integers(4)
        wave = np.tile(ramp * (1 if direction < 2 else -1), (size, 1))
        wave = wave if direction % 2 == 0 else wave.T
        colour = rng.uniform(0.4, 1.0, 3)
        a = np.clip(127.5 + 120 * wave[..., None] * colour, 0, 255).astype(np.uint8)
        b = io.BytesIO()
        Image.fromarray(a).save(b, "JPEG", quality=95)
        members.append((b.getvalue(), [i % 3]))
    return write_shard_set(out, members, shard_size, num_classes=3, max_side=size)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return gradient_shards(tmp_path_factory.mktemp("ramps"))


@pytest.fixture(scope="module")
def mae_run(shards, tmp_path_factory):
    from trainer.mae import main

    run = tmp_path_factory.mktemp("mae") / "run"
    result = main([*TINY, f"shards={shards}", f"run_dir={run}", "batch_size=16", "total_samples=640",
                   "base_lr=0.02", "ckpt_every=20", "picture_images=4"])
    return run, result


def test_loss_falls_on_cpu(mae_run):
    run, result = mae_run
    m = metrics(run)
    assert [x["step"] for x in m] == list(range(1, 41))
    first, last = np.mean([x["loss"] for x in m[:5]]), np.mean([x["loss"] for x in m[-5:]])
    # predicting 0 (the mean of a normalized patch) scores ~(n-1)/n ~ 1: the start is near that
    assert 0.8 < first < 1.3 and last < 0.7 * first, (first, last)  # measured: 1.10 -> 0.49
    assert m[-1]["lr"] < m[len(m) // 2]["lr"]  # the cosine is decaying
    assert not result["stopped"] and result["step"] == 40


def test_outputs_export_and_picture(mae_run):
    run, result = mae_run
    exp = run / "export"
    meta = json.loads((exp / "mae.json").read_text())
    assert (meta["model"], meta["img_size"], meta["patch_size"], meta["mask_ratio"]) == ("test_vit", 64, 16, 0.75)
    assert meta["decoder"] == {"depth": 1, "width": 64, "heads": 4, "mlp_ratio": 4.0}
    assert any(k.startswith("blocks.") for k in load_file(str(exp / "decoder.safetensors")))
    with Image.open(run / "reconstructions.png") as im:  # 4 rows of images x 4 columns
        assert im.format == "PNG" and im.size[1] > im.size[0] * 0.8
    assert (run / "curves.png").exists() and (run / "config.yaml").exists()
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["ckpt-000000020.pt", "ckpt-000000040.pt"]
    assert 0 < result["picture_loss"] < 2


def test_pretrain_starts_from_the_mae_encoder(mae_run, shards):
    from trainer.distributed import setup_distributed
    from trainer.pretrain import PretrainConfig, setup

    run, _ = mae_run
    cfg = PretrainConfig(shards=str(shards), run_dir=str(run.parent / "p"), total_samples=64, batch_size=16,
                         model="test_vit", img_size=64, recipe="adamw", init_from=str(run / "export"))
    _, _, model = setup(cfg, setup_distributed("cpu"))
    enc = load_file(str(run / "export" / "encoder.safetensors"))
    trunk = model.trunk.state_dict()
    assert trunk.keys() == enc.keys()
    # trainer.models gives img_size only to vit_* names, so test_vit's trunk keeps its 160 px grid:
    # the position embedding is resampled, every other tensor is the MAE encoder's
    assert trunk["pos_embed"].shape != enc["pos_embed"].shape
    assert all(torch.equal(trunk[k], enc[k]) for k in enc if k != "pos_embed")


def test_bad_configs_fail_before_work(shards, tmp_path):
    from trainer.mae import main

    cases = [(["model=regnety_002"], "VisionTransformer"), (["mask_ratio=1.0"], "mask_ratio must be in"),
             (["mask_ratio=0.99"], "keeps 0 of 16 patches"), (["decoder_width=30"], "divisible"),
             (["shards=/nonexistent"], "no finished shards")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            main([*TINY, f"shards={shards}", f"run_dir={tmp_path / 'r'}", "batch_size=16", "total_samples=160", *args])
    assert not (tmp_path / "r").exists()


def mae(args):
    """What each torchrun rank runs: trainer.mae with TINY and args."""
    return ["-m", "trainer.mae", *TINY, *args]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_sigkill_then_resume_is_exact(shards, tmp_path):
    args = [f"shards={shards}", "batch_size=16", "total_samples=384", "ckpt_every=5", "base_lr=0.02"]
    ref = tmp_path / "ref"
    r = torchrun(2, mae(args + [f"run_dir={ref}"]), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    p = start_torchrun(2, mae(args + [f"run_dir={run}"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       start_new_session=True)
    kill_when(p, run / "checkpoints" / "ckpt-000000010.pt")  # the agent and its ranks: each in a session of its own
    killed_at = metrics(run)[-1]["step"]
    assert 10 <= killed_at < 24, killed_at
    r = torchrun(2, mae(args + [f"run_dir={run}"]), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = metrics(run), metrics(ref)
    assert [x["step"] for x in got] == [x["step"] for x in want] == list(range(1, 25))
    for a, b in zip(got, want):  # same batches, same masks (drawn from seed, step, rank), same weights
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), a["step"]
