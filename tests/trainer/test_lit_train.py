"""trainer.lit end to end on a tiny image-text problem (tests/helpers/litkit.py): zero-shot by name near
100% when texts name the images' colours and near chance when the pairing is shuffled; the image
tower locked; resume exact without embedding again; two torchrun processes = one; the export and
checkpoints load without pickle; bad input named."""
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT
from tests.helpers.launch import project_env, torchrun
from tests.helpers.litkit import COLOURS, SIZE, write_colour_task, write_text_shards, write_tower
from tests.helpers.runs import metrics
from trainer.checkpoint import read_checkpoint
from trainer.lit.train import main as lit
from transfer.zero_shot import main as zero_shot

TINY = ["img_size=32", "batch_size=32", "vocab_size=300", "context_length=8", "width=32", "depth=2", "heads=2",
        "workers=0", "log_every=10", "base_lr=0.5", "device=cpu", "keep_ckpts=0", "ckpt_every=50"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("lit")
    return {"tower": write_tower(root / "tower"), "task": write_colour_task(root / "task"),
            "aligned": write_text_shards(root / "aligned", no_text_every=10),
            "shuffled": write_text_shards(root / "shuffled", shuffle_texts=True), "root": root}


def train(kit, shards, run, steps=100, extra=()):
    return lit([f"shards={kit[shards]}", f"image_tower={kit['tower']}", f"run_dir={run}",
                f"total_samples={32 * steps}", *TINY, *extra])


def score(kit, export, out, extra=()):
    return zero_shot([f"model={export}", f"data={kit['task']}", f"out={out}", "method=lit", "img_size=32",
                      "device=cpu", *extra])


@pytest.fixture(scope="module")
def aligned(kit):
    run = kit["root"] / "aligned_run"
    return run, train(kit, "aligned", run)


def test_zero_shot_by_name_near_100_when_aligned_near_chance_when_shuffled(kit, aligned):
    run, result = aligned
    assert result["pairs"] == {"images": 160, "pairs": 144, "no_text": 16, "bad": 0}  # every 10th has no text
    good = score(kit, run / "export", kit["root"] / "zs_aligned.json")
    train(kit, "shuffled", kit["root"] / "shuffled_run")
    bad = score(kit, kit["root"] / "shuffled_run" / "export", kit["root"] / "zs_shuffled.json")
    n = good["val_images"]
    assert n == 48 and good["classes"] == sorted(COLOURS)
    assert good["top1"] >= 0.95, good["top1"]
    # chance is 1/8: under the null, P(>= 13 of 48 right) < 0.02 (binomial); seeds are fixed
    assert bad["top1"] * n <= 12, bad["top1"]
    assert sum(good["val_correct"]) == round(good["top1"] * n) and len(good["val_top5_correct"]) == n
    assert json.loads((kit["root"] / "zs_aligned.json").read_text())["method"] == "lit"


def test_image_tower_locked_and_embeddings_are_the_exports(kit, aligned):
    run, _ = aligned
    export = run / "export"
    for f in (kit["tower"]).iterdir():  # the export's image tower: the very files it was trained against
        assert (export / "image" / f.name).read_bytes() == f.read_bytes()
    text_keys = load_file(str(export / "text.safetensors")).keys()
    assert all(not k.startswith(("stem", "s1", "s2", "s3", "s4", "head")) for k in text_keys)
    from trainer.lit.export import load_lit
    from trainer.lit.pairs import ShardImages
    from trainer.data.shard_set import load_shard_set

    m = load_lit(export)
    shard = load_shard_set(kit["aligned"]).shards[1]
    images, ids, texts, n, no_text, bad = ShardImages([shard], SIZE)[0]
    mean = torch.tensor(m.image.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(m.image.std).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        again = m.image.trunk.eval()(images.float().sub(mean).div(std))
    cached = np.load(run / "pairs" / "shard-000001.image.npy", allow_pickle=False)
    torch.testing.assert_close(torch.from_numpy(cached), again, rtol=1e-5, atol=1e-5)
    assert texts == json.loads((run / "pairs" / "shard-000001.texts.json").read_text())["texts"]
    assert all(t.startswith("a ") and t.endswith(" square") for t in texts) and n == 40 and no_text == 4


def test_resume_is_exact_and_embeds_nothing_again(kit, aligned):
    run, _ = aligned
    resumed = kit["root"] / "resumed_run"
    shutil.copytree(run, resumed)  # what a run killed after its step-50 checkpoint leaves
    for p in ("export", "result.json", "curves.png"):
        shutil.rmtree(resumed / p) if (resumed / p).is_dir() else (resumed / p).unlink()
    (resumed / "checkpoints" / "ckpt-000000100.pt").unlink()
    embedded = {p.name: p.stat().st_mtime_ns for p in (resumed / "pairs").glob("*.npy")}
    train(kit, "aligned", resumed)
    assert {p.name: p.stat().st_mtime_ns for p in (resumed / "pairs").glob("*.npy")} == embedded
    a, b = (load_file(str(r / "export" / "text.safetensors")) for r in (run, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [x["loss"] for x in metrics(resumed)] == [x["loss"] for x in metrics(run)]
    assert metrics(run)[-1]["temperature"] != pytest.approx(10.0)  # learned


def test_sigterm_checkpoints_then_the_rerun_finishes_as_if_uninterrupted(kit, tmp_path):
    ref = train(kit, "aligned", tmp_path / "ref", steps=300)
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "trainer.lit", f"shards={kit['aligned']}",
                          f"image_tower={kit['tower']}", f"run_dir={run}", "total_samples=9600", *TINY,
                          "ckpt_every=1000", "log_every=5"], cwd=ROOT, env=project_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and
                                          len((run / "metrics.jsonl").read_text().splitlines()) >= 2):
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    ckpts = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    assert len(ckpts) == 1 and 10 <= int(ckpts[0].stem.split("-")[1]) < 300  # the stop's own checkpoint
    assert not (run / "export").exists() and "stopped by SIGTERM" in err
    assert train(kit, "aligned", run, steps=300)["step"] == ref["step"] == 300
    a, b = (load_file(str(r / "export" / "text.safetensors")) for r in (tmp_path / "ref", run))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_and_checkpoints_load_without_pickle(kit, aligned):
    run, _ = aligned
    files = sorted(p.relative_to(run / "export").as_posix() for p in (run / "export").rglob("*") if p.is_file())
    assert all(f.endswith((".json", ".safetensors")) for f in files), files
    assert {"text.safetensors", "tokenizer.json", "lit.json", "image/model.safetensors"} <= set(files)
    ckpt = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
    state = read_checkpoint(ckpt)  # torch.load(weights_only=True)
    assert state.step == 100 and "log_temperature" in state.model


@pytest.mark.multiprocess
def test_two_torchrun_processes_train_as_one(kit, tmp_path):
    one = train(kit, "aligned", tmp_path / "one", steps=20)
    r = torchrun(2, ["-m", "trainer.lit", f"shards={kit['aligned']}", f"image_tower={kit['tower']}",
                     f"run_dir={tmp_path / 'two'}", "total_samples=640", *TINY], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_allclose([x["loss"] for x in metrics(tmp_path / "two")],
                               [x["loss"] for x in metrics(tmp_path / "one")],
                               rtol=2e-4)
    assert one["pairs"]["pairs"] == 144
    a, b = (load_file(str(tmp_path / d / "export" / "text.safetensors")) for d in ("one", "two"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-3, worst


def test_bad_input_is_named(kit, aligned, tmp_path):
    run, _ = aligned
    no_text = write_text_shards(tmp_path / "no_text", n=40, no_text_every=1)
    with pytest.raises(ValueError, match="none of its 40 stored images has a text"):
        lit([f"shards={no_text}", f"image_tower={kit['tower']}", f"run_dir={tmp_path / 'r'}", "total_samples=64",
             *TINY])
    with pytest.raises(ValueError, match="trained on image embeddings at 32: pass img_size=32"):
        zero_shot([f"model={run / 'export'}", f"data={kit['task']}", f"out={tmp_path / 'z.json'}", "method=lit",
                   "img_size=64", "device=cpu"])
    with pytest.raises(ValueError, match="is a LiT export: pass method=lit"):
        zero_shot([f"model={run / 'export'}", f"data={kit['task']}", f"out={tmp_path / 'z.json'}", "img_size=32"])
    (tmp_path / "names.yaml").write_text("violet: purple\n")
    with pytest.raises(ValueError, match=r"classes \['violet'\] are not in the dataset"):
        score(kit, run / "export", tmp_path / "z.json", [f"class_names={tmp_path / 'names.yaml'}"])
    with pytest.raises(ValueError, match="data_format must be wds"):
        lit([f"shards={no_text}", f"image_tower={kit['tower']}", f"run_dir={tmp_path / 'r'}", "total_samples=64",
             "data_format=ffcv", *TINY])


def test_train_split_as_a_dev_set(kit, aligned, tmp_path):
    run, _ = aligned
    dev = score(kit, run / "export", tmp_path / "dev.json", ["split=train"])
    assert dev["split"] == "train" and dev["val_images"] == 48 and dev["top1"] >= 0.95
    from transfer.zero_shot_table import main as table

    with pytest.raises(ValueError, match="dev.json: scored on the train split"):
        table([f"data={kit['task']}", f"lit={tmp_path / 'dev.json'}", f"out={tmp_path / 't.json'}"])
    with pytest.raises(ValueError, match="split must be train or val"):
        score(kit, run / "export", tmp_path / "x.json", ["split=test"])


def test_class_name_overrides_and_templates_reach_the_prompts(kit, aligned, tmp_path):
    run, _ = aligned
    (tmp_path / "names.yaml").write_text("red: [crimson]\n")
    r = score(kit, run / "export", tmp_path / "z.json", [f"class_names={tmp_path / 'names.yaml'}",
                                                          "templates=['a {} square']"])
    assert r["class_names"]["red"] == ["crimson"] and r["class_names"]["blue"] == ["blue"]
    assert r["templates"] == ["a {} square"]
    labels = [c for c in sorted(COLOURS) for _ in range(6)]  # the task's val images, in class order
    per_class = {c: np.mean([ok for ok, y in zip(r["val_correct"], labels) if y == c]) for c in ("red", "blue")}
    assert per_class["blue"] == 1.0 and per_class["red"] < 1.0  # "crimson" was never in a training text
