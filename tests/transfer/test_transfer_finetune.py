"""Finetuning on a tiny real ImageFolder: one process in the default suite, two gloo processes under
real torchrun."""
import json

import pytest

from tests.helpers.images import make_folder
from tests.helpers.launch import torchrun
from tests.helpers.runs import metrics

BASE = ["model=random:regnety_002", "img_size=32", "workers=0", "log_every=1", "eval_batch_size=12"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("ft") / "data")


def test_single_process_learns_and_exports(data, tmp_path):
    from trainer.export import load_exported
    from transfer.finetune import main, steps_for_size

    out = tmp_path / "ft.json"
    r = main([*BASE, f"data={data}", f"out={out}", "steps=16", "batch_size=12", "base_lr=4", "ema_decay=0.9"])
    assert r["steps"] == 16 and r["world_size"] == 1 and r["sync_bn"] is False
    assert r["peak_lr"] == pytest.approx(4 * 12 / 512)
    rows = metrics(tmp_path / "ft_run")
    assert [x["step"] for x in rows] == list(range(1, 17))
    assert rows[-1]["lr"] < rows[0]["lr"] / 50  # half-cosine down to ~0
    # the colours separate the classes: 16 steps take the EMA weights well above chance (1/3)
    assert r["top1"] >= 0.6, r
    model, meta = load_exported(tmp_path / "ft_run" / "export")
    assert meta["labels"] == ["cat", "dog", "truck"] and model.head.out_features == 3
    assert json.loads(out.read_text())["top1"] == r["top1"]
    assert steps_for_size(1_000) == 500 and steps_for_size(400_000) == 10_000 and steps_for_size(1_281_167) == 20_000


def test_too_small_for_one_batch_is_an_error(data, tmp_path):
    from transfer.finetune import main

    with pytest.raises(ValueError, match="fewer than one global batch"):
        main([*BASE, f"data={data}", f"out={tmp_path / 'x.json'}", "steps=1", "batch_size=64"])


@pytest.mark.multiprocess
def test_two_gloo_processes_under_torchrun(data, tmp_path):
    out = tmp_path / "ft2.json"
    r = torchrun(2, ["-m", "transfer.finetune", *BASE, f"data={data}", f"out={out}", "steps=4", "batch_size=8"],
                 timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and res["steps"] == 4 and res["sync_bn"] is False
    assert "SyncBatchNorm needs GPUs" in r.stderr
    assert len(metrics(tmp_path / "ft2_run")) == 4
