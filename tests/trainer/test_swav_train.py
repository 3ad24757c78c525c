"""trainer.swav end to end on CPU (SwAV, Caron et al. 2020): a two-process torchrun run with a
queue and frozen prototypes, its metrics, export and checkpoints; SIGKILL and an exact resume
(the gathered queue included); the loss falling below ln K on patterned images; bad configs
refused before any work; a collapsed run reported. The parts (Sinkhorn-Knopp, the swapped loss,
multi-crop, the head's export) are tested in tests/unit/test_swav_units.py."""
import io
import json
import logging
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.helpers.launch import kill_when, start_torchrun, torchrun
from tests.helpers.runs import metrics, resumed_at
from tests.helpers.shardkit import make_shards, write_shard_set
from trainer.checkpoint import read_checkpoint, save_checkpoint

K, DIM, HIDDEN, SEED = 16, 8, 32, 1
TINY = ["model=regnety_002", "img_size=32", "local_size=16", "local_crops=2", f"hidden_dim={HIDDEN}", f"dim={DIM}",
        f"prototypes={K}", "batch_size=16", "workers=1", "log_every=1", "device=cpu", "recipe=swav",
        "base_lr=19.2", "jitter=0.5", "blur_p=0", f"seed={SEED}"]
# 128 images over 2 ranks x 1 worker at batch 16: 8 steps an epoch, 24 steps; checkpoints at 5, 10, 15, 20, 24.
# The queue (16 embeddings per rank) starts at step index 2; the prototypes are frozen for step indices 0..5,
# so the step-5 checkpoint holds the initial prototypes and the step-10 one has had 4 updates.
WORLD, BATCH, QUEUE, QUEUE_START, FREEZE = 2, 16, 32, 2, 6
QUEUED = [f"queue_length={QUEUE}", f"queue_start_step={QUEUE_START}", f"freeze_prototypes_steps={FREEZE}",
          "total_samples=384", "ckpt_every=5", "keep_ckpts=0"]


def pattern_shards(out: Path, n: int = 128, size: int = 48, shard_size: int = 16, seed: int = 0) -> Path:
    """Shards of two-colour patterns, JPEG q95: horizontal stripes, vertical stripes, a
    checkerboard or diagonal stripes (image i: kind i % 4, its label), each with a random period
    (4..12 px), phase and pair of colours. Two crops of one image share its colours and
    orientation, crops of different images mostly do not: there is something to cluster on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    members = []
    for i in range(n):
        kind, period = i % 4, int(rng.integers(4, 13))
        phase = int(rng.integers(0, period))
        if kind == 2:
            half = max(2, period // 2)
            on = ((yy + phase) // half + (xx + phase) // half) % 2 == 1
        else:
            on = (([yy, xx, None, xx + yy][kind] + phase) % period) < period / 2
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        buf = io.BytesIO()
        Image.fromarray(np.where(on[..., None], a, b).astype(np.uint8)).save(buf, "JPEG", quality=95)
        members.append((buf.getvalue(), [kind]))
    return write_shard_set(out, members, shard_size, num_classes=4, max_side=size)


def swav(args: list[str]) -> list[str]:
    """What each of torchrun's WORLD ranks runs: trainer.swav with TINY and args."""
    return ["-m", "trainer.swav", *TINY, *args]


def run_swav_in_process(args: list[str]) -> dict:
    """trainer.swav.main in this process (on one thread: tests/conftest.py)."""
    from trainer.swav import main

    return main(args)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return pattern_shards(tmp_path_factory.mktemp("patterns"))


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """The uninterrupted two-process run with a queue: its run directory."""
    ref = tmp_path_factory.mktemp("swav_reference") / "run"
    r = torchrun(WORLD, swav([f"shards={shards}", *QUEUED, f"run_dir={ref}"]), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return ref


@pytest.mark.multiprocess
def test_reference_metrics_export_and_checkpoints(reference):
    m = metrics(reference)
    assert [x["step"] for x in m] == list(range(1, 25))
    for x in m:
        assert isinstance(x["proto_used"], int) and 1 <= x["proto_used"] <= K, x
        assert 0 <= x["proto_entropy"] <= 1 and 0 <= x["prediction_entropy"] <= 1, x
        assert x["loss_vs_ln_k"] == pytest.approx(x["loss"] / math.log(16), rel=1e-9), x
    # each rank queues 32 / 2 = 16 global-view embeddings, 8 (its batch) a step, from step index 2:
    # indices 2 and 3 fill it, index 4 (record 5) is the first whose codes use it
    rank_queue, rank_batch = QUEUE // WORLD, BATCH // WORLD
    first_in_use = QUEUE_START + rank_queue // rank_batch + 1
    assert first_in_use == 5
    assert [x["queue_in_use"] for x in m] == [x["step"] >= first_in_use for x in m]

    exp = reference / "export"
    meta = json.loads((exp / "model.json").read_text())
    assert meta["head"] == "swav" and meta["head_args"] == {"hidden": HIDDEN, "dim": DIM}
    exported = load_file(str(exp / "head.safetensors"))["prototypes.weight"]
    assert exported.shape == (K, DIM)
    torch.testing.assert_close(exported.norm(dim=1), torch.ones(K), rtol=0, atol=1e-5)

    from trainer.swav.model import create_swav

    torch.manual_seed(SEED)  # as trainer/swav/train.py's setup builds the initial model
    initial = create_swav("regnety_002", K, 32, {"hidden": HIDDEN, "dim": DIM}).head.prototypes.weight.detach()
    ckpts = sorted((reference / "checkpoints").glob("ckpt-*.pt"))
    assert [int(p.stem.split("-")[1]) for p in ckpts] == [5, 10, 15, 20, 24]
    states = {int(p.stem.split("-")[1]): read_checkpoint(p) for p in ckpts}
    protos = {s: st.model["head.prototypes.weight"] for s, st in states.items()}
    assert (protos[5] - initial).abs().max() < 1e-6  # steps 0..4 all frozen (FREEZE = 6)
    assert (protos[10] - initial).abs().max() > 1e-3  # indices 6..9 updated them
    torch.testing.assert_close(exported, protos[24])
    for s, st in states.items():
        queue = st.task_state["swav"]["queue"]
        assert st.task_state["swav"]["use_queue"] is (s >= first_in_use)
        assert tuple(queue.shape) == (WORLD, 2, rank_queue, DIM), s  # [ranks, global views, L, dim]
        # every slot holds an embedding (unit rows) by step 5, and the ranks' queues are their own
        torch.testing.assert_close(queue.norm(dim=-1), torch.ones(WORLD, 2, rank_queue), rtol=0, atol=1e-4)
        assert (queue[0] - queue[1]).abs().max() > 1e-2, s


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigkill_then_resume_is_exact(shards, reference, tmp_path):
    args = [f"shards={shards}", *QUEUED]
    run = tmp_path / "run"
    p = start_torchrun(WORLD, swav(args + [f"run_dir={run}"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       start_new_session=True)
    kill_when(p, run / "checkpoints" / "ckpt-000000010.pt")  # the agent and its ranks: each in a session of its own
    killed_at = metrics(run)[-1]["step"]
    assert 10 <= killed_at < 24 and not (run / "result.json").exists(), killed_at

    # a copy of the killed run whose newest checkpoint lost its queue
    lost = tmp_path / "lost_queue"
    shutil.copytree(run, lost)
    newest = sorted((lost / "checkpoints").glob("ckpt-*.pt"))[-1]
    state = read_checkpoint(newest)
    del state.task_state["swav"]["queue"]
    save_checkpoint(newest.parent, state, keep=0)

    want = metrics(reference)
    r = torchrun(WORLD, swav(args + [f"run_dir={run}"]), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = resumed_at(r.stderr)
    assert resumed in (10, 15), resumed
    got = metrics(run)
    assert [x["step"] for x in got] == [x["step"] for x in want] == list(range(1, 25))
    for a, b in zip(got, want):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), a["step"]
        assert (a["proto_used"], a["queue_in_use"]) == (b["proto_used"], b["queue_in_use"]), a["step"]

    r = torchrun(WORLD, swav(args + [f"run_dir={lost}"]), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert resumed_at(r.stderr) == resumed
    after = [(a["loss"], b["loss"]) for a, b in zip(metrics(lost), want) if a["step"] > resumed]
    assert len(after) == 24 - resumed
    # the queue's embeddings enter the codes of the very next step: without them the losses part ways
    assert abs(after[0][0] - after[0][1]) > 1e-4 and all(abs(a - b) > 1e-5 for a, b in after), after


def test_loss_falls_below_ln_k(shards, tmp_path):
    # no colour jitter, a one-layer projection and LARS at 4x TINY's lr: at 60 steps the loss ends 0.75
    # below ln K (seed 1; seeds 2 and 3: 0.50 and 0.58 below). With TINY's jitter 0.5 and MLP it stays at ln K
    run = tmp_path / "run"
    result = run_swav_in_process([*TINY, f"shards={shards}", f"run_dir={run}", "total_samples=960", "jitter=0",
                                  "hidden_dim=0", "base_lr=76.8", "freeze_prototypes_steps=5", "ckpt_every=1000"])
    m = metrics(run)
    assert [x["step"] for x in m] == list(range(1, 61)) and result["step"] == 60
    first, last = np.mean([x["loss"] for x in m[:5]]), np.mean([x["loss"] for x in m[-5:]])
    # ln K is the loss of uniform predictions, whatever the codes: below it, views predict each other's
    # codes. The untrained net predicts another view's codes no better than that (measured: 5.6), while
    # a view's own codes, a function of its own scores, it predicts at once (0.72 at step 1)
    assert m[0]["loss"] > math.log(K), m[0]
    assert last < math.log(K) - 0.3 and last < first, (first, last, math.log(K))


def test_bad_configs_fail_before_work(shards, tmp_path):
    cases = [(["data_format=ffcv"], "data_format=ffcv.*use data_format=wds"),
             (["queue_length=24"], "queue_length 24 must be a multiple of batch_size 16"),
             (["global_crops=1"], "global_crops must be >= 2"),
             (["recipe=adamw"], "unknown recipe 'adamw' for SwAV; valid: swav, seer, sgd"),
             (["prototypes=1"], r"need prototypes >= 2.*got 1,")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            run_swav_in_process([*TINY, f"shards={shards}", f"run_dir={tmp_path / 'r'}", "total_samples=160", *args])
        assert not (tmp_path / "r").exists(), args


def test_collapse_is_reported(tmp_path, caplog):
    # every image the same flat colour and no colour jitter: the views of all images embed alike, so
    # Sinkhorn-Knopp's equipartition gives every view the uniform code and the best prediction is
    # uniform too; the loss settles at ln K (warned at step 18 with seed 1, 16 and 10 with seeds 2, 3)
    flat = make_shards(tmp_path / "flat", n=64, shard_size=16, uniform=True)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="swav"):
        run_swav_in_process([*TINY, f"shards={flat}", f"run_dir={run}", "total_samples=640", "jitter=0", "dim=16",
                             "prototypes=8", "base_lr=76.8", "temperature=0.3", "freeze_prototypes_steps=2",
                             "ckpt_every=1000"])
    warned = [r.getMessage() for r in caplog.records if r.name == "swav" and "stayed at ln K" in r.getMessage()]
    assert warned, [r.getMessage() for r in caplog.records]
    last = metrics(run)[-1]
    assert last["prediction_entropy"] > 0.99 and last["loss_vs_ln_k"] == pytest.approx(1, abs=0.02), last
