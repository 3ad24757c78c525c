"""transfer.finetune on trainer.loop's fit: SIGTERM -> checkpoint -> exit 0 and SIGKILL under real
torchrun, each rerun resuming to the loss curve, EMA weights and EMA top-1 of an uninterrupted run;
fp16 gets a GradScaler."""
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.images import make_folder
from tests.helpers.launch import kill_tree, start_torchrun, torchrun
from tests.helpers.runs import metrics as run_metrics

# 24 training images at batch 6: 4 batches an epoch, so the step-10 checkpoint is mid-epoch
ARGS = ["model=random:regnety_002", "img_size=32", "log_every=1", "eval_batch_size=12", "steps=40", "batch_size=6",
        "base_lr=2", "ema_decay=0.9", "ckpt_every=5", "seed=2"]


def finetune(data: Path, out: Path, workers: int) -> list[str]:
    """What torchrun's one rank runs: transfer.finetune with ARGS."""
    return ["-m", "transfer.finetune", *ARGS, f"workers={workers}", f"data={data}", f"out={out}"]


def metrics(out: Path) -> list[dict]:
    """The curve of the finetune that reports to `out` (its run directory is OUT_run)."""
    return run_metrics(out.parent / f"{out.stem}_run")


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (out.parent / f"{out.stem}_run" / "checkpoints").glob("ckpt-*.pt"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("ft_resume") / "data")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run (workers=0): its curve, result and exported EMA weights."""
    out = tmp_path_factory.mktemp("ref") / "ft.json"
    r = torchrun(1, finetune(data, out, 0), timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def assert_same_run(got: Path, want: Path) -> None:
    a, b = metrics(got), metrics(want)
    assert [x["step"] for x in a] == [x["step"] for x in b] == list(range(1, 41))
    for x, y in zip(a, b):
        assert x["lr"] == y["lr"] and abs(x["loss"] - y["loss"]) <= 1e-6, (x, y)
    rg, rw = json.loads(got.read_text()), json.loads(want.read_text())
    assert rg["top1"] == rw["top1"] and rg["top1_raw"] == rw["top1_raw"]
    assert rg["loss_first"] == rw["loss_first"] and rg["loss_last"] == rw["loss_last"]
    # the EMA is what gets exported: resuming must continue the average, not restart it
    eg = load_file(str(got.parent / f"{got.stem}_run" / "export" / "model.safetensors"))
    ew = load_file(str(want.parent / f"{want.stem}_run" / "export" / "model.safetensors"))
    assert eg.keys() == ew.keys()
    for k in ew:
        assert torch.allclose(eg[k].double(), ew[k].double(), rtol=0, atol=1e-6), k


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError):  # a file being written
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.multiprocess
def test_sigterm_checkpoints_exits_zero_and_the_rerun_matches(data, reference, tmp_path):
    import psutil

    out = tmp_path / "ft.json"
    p = start_torchrun(1, finetune(data, out, 0), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(metrics(out)) >= 12, "12 logged steps")
    workers = [c for c in psutil.Process(p.pid).children(recursive=True) if "transfer.finetune" in " ".join(c.cmdline())]
    assert len(workers) == 1, workers
    workers[0].send_signal(signal.SIGTERM)  # what a preempting scheduler sends
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]  # the worker exited 0, so torchrun does too
    stopped_at = metrics(out)[-1]["step"]
    assert 12 <= stopped_at < 40, stopped_at
    assert checkpoint_steps(out)[-1] == stopped_at  # written at the step it stopped, not only at the 5s
    assert not out.exists()  # a preempted run reports nothing
    r = torchrun(1, finetune(data, out, 0), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"at step {stopped_at}" in r.stderr  # the rerun resumed, it did not start over
    assert_same_run(out, reference)


@pytest.mark.multiprocess
def test_sigkill_then_rerun_matches_with_a_loader_worker(data, reference, tmp_path):
    # workers=1 against the workers=0 reference: the augmentations are drawn from (seed, epoch,
    # image), not from the process that decodes
    out = tmp_path / "ft.json"
    p = start_torchrun(1, finetune(data, out, 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       start_new_session=True)
    try:
        wait_for(lambda: 10 in checkpoint_steps(out), "the step-10 checkpoint")
    finally:
        kill_tree(p)  # the agent and its rank: the rank runs in a session of its own
    killed_at = metrics(out)[-1]["step"]
    assert 10 <= killed_at < 40, killed_at
    assert not out.exists()
    r = torchrun(1, finetune(data, out, 1), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    assert_same_run(out, reference)


def test_fp16_builds_an_enabled_scaler_and_checkpoints_it(data, tmp_path):
    from torch import nn

    from trainer.checkpoint import read_checkpoint
    from trainer.prepare import prepare, resolve_precision, start
    from transfer.finetune import FinetuneConfig, main

    def prepared(precision: str):
        cfg = FinetuneConfig(model="random:regnety_002", data=str(data), out=str(tmp_path / f"{precision}.json"),
                             precision=precision, device="cpu", batch_size=6)
        return prepare(cfg, start(cfg), nn.Linear(2, 2), lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                       cfg.run_dir, (0.5,) * 3, (0.25,) * 3)

    fp16 = prepared("fp16")
    assert fp16.precision == "fp16" and fp16.scaler.is_enabled()
    for precision, resolved in (("auto", "fp32"), ("bf16", "bf16"), ("fp32", "fp32")):
        run = prepared(precision)
        assert run.precision == resolved and not run.scaler.is_enabled(), precision
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"  # a pure rule: no GPU needed
    # a real fp16 finetune on CPU: the checkpoint holds a live scaler that counted its 2 good steps
    out = tmp_path / "ft16.json"
    main(["model=random:regnety_002", "img_size=32", "workers=0", f"data={data}", f"out={out}", "steps=2",
          "batch_size=12", "precision=fp16", "device=cpu"])
    state = read_checkpoint(tmp_path / "ft16_run" / "checkpoints" / "ckpt-000000002.pt")
    assert state.scaler["scale"] == 2.0 ** 16 and state.scaler["_growth_tracker"] == 2
    assert state.config["precision"] == "fp16" and state.task_state["ema"]["updates"] == 2
