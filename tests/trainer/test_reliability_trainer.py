"""Faults of the trainer's own (issue 16): unreadable and crafted checkpoints, a kill or a full disk
during a checkpoint write, resuming at an epoch boundary or on another world size, a rank that
stalls (undecodable images: tests/trainer/test_reliability_bad_samples.py). Real files, real torch.save /
torch.load, real torchrun with gloo, the real WebDataset reader; faults are planted in the files or the processes.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import ROOT
from tests.helpers.ckptkit import tiny_checkpoint
from tests.helpers.images import make_folder
from tests.helpers.launch import project_env, torchrun
from tests.helpers.runs import TINY_PRETRAIN as BASE, forget_after, metrics
from tests.helpers.shardkit import make_shards
from trainer.checkpoint import (LoaderPosition, UnreadableCheckpoints, list_checkpoints, load_latest, read_checkpoint,
                                save_checkpoint)


def run_python(code: str, *args, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT,
                          env=project_env(), capture_output=True, text=True, timeout=timeout)


def same_curve(got: list[dict], want: list[dict], rel: float = 1e-6) -> None:
    assert [x["step"] for x in got] == [x["step"] for x in want]
    for a, b in zip(got, want):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12) and a["loss"] == pytest.approx(b["loss"], rel=rel,
                                                                                          abs=1e-7), a["step"]


# --- checkpoints that cannot be loaded: an error, not a silent restart (bug) and 20 -----------------------


def test_all_checkpoints_unreadable_is_an_error_unless_fresh_start(tmp_path):
    from trainer.pretrain import main

    shards = make_shards(tmp_path / "shards", n=32, shard_size=8)
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    save_checkpoint(ckpts, tiny_checkpoint(4, w=torch.ones(3)), keep=0)
    save_checkpoint(ckpts, tiny_checkpoint(8, w=torch.ones(3)), keep=0)
    (ckpts / "ckpt-000000008.pt").write_bytes((ckpts / "ckpt-000000008.pt").read_bytes()[:200])  # cut short
    (ckpts / "ckpt-000000004.pt").write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(UnreadableCheckpoints) as e:
        load_latest(ckpts)
    message = str(e.value)
    assert "ckpt-000000008.pt" in message and "ckpt-000000004.pt" in message and "fresh_start=true" in message
    assert load_latest(ckpts, fresh_start=True) is None
    args = [*BASE, "workers=0", f"shards={shards}", f"run_dir={run}", "batch_size=8", "total_samples=32"]
    (run / "metrics.jsonl").write_text(json.dumps({"step": 8, "loss": 1.0}) + "\n")  # the old run's curve
    with pytest.raises(UnreadableCheckpoints, match="ckpt-000000008.pt.*ckpt-000000004.pt"):
        main(args)
    assert sorted(p.name for p in list_checkpoints(ckpts)) == ["ckpt-000000004.pt", "ckpt-000000008.pt"]
    assert metrics(run) == [{"step": 8, "loss": 1.0}]  # nothing of the old run was touched
    result = main([*args, "fresh_start=true"])  # asked for: starts from step 0, the old files set aside
    assert result["step"] == 4 and [x["step"] for x in metrics(run)] == [1, 2, 3, 4]
    assert sorted(p.name for p in (ckpts / "unreadable").iterdir()) == ["ckpt-000000004.pt", "ckpt-000000008.pt"]
    assert [p.name for p in list_checkpoints(ckpts)] == ["ckpt-000000004.pt"]
    assert load_latest(ckpts).step == 4


class RunsCode:
    """Pickles as a call of exec: loading it with plain pickle runs the code."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_crafted_pickle_checkpoint_runs_no_code_and_restarts_nothing(tmp_path):
    from trainer.pretrain import main

    marker = tmp_path / "code-ran"
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    evil = ckpts / "ckpt-000000010.pt"
    torch.save({**tiny_checkpoint(10).to_state(), "x": RunsCode(f"open({str(marker)!r}, 'w').write('ran')")}, evil)
    # the payload is live: an unsafe load runs it (in another process, to keep this one clean)
    r = run_python("import sys, torch; torch.load(sys.argv[1], weights_only=False)", evil)
    assert r.returncode == 0 and marker.read_text() == "ran", r.stderr[-2000:]
    marker.unlink()
    with pytest.raises(UnreadableCheckpoints, match=r"ckpt-000000010\.pt: UnpicklingError"):
        load_latest(ckpts)
    assert not marker.exists()
    shards = make_shards(tmp_path / "shards", n=32, shard_size=8)
    with pytest.raises(UnreadableCheckpoints, match="fresh_start=true"):  # the trainer neither runs it nor restarts
        main([*BASE, "workers=0", f"shards={shards}", f"run_dir={tmp_path / 'run'}", "batch_size=8",
              "total_samples=32"])
    assert not marker.exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
    save_checkpoint(ckpts, tiny_checkpoint(5, w=torch.full((2,), 5.0)), keep=0)  # an older good one is used
    assert load_latest(ckpts).step == 5 and not marker.exists()


# --- 24 and 25: a kill or a full disk during the checkpoint write --------------------------------------

# Writes ckpt 5, then ckpt 10 of 16 MiB of tensors, pausing (for the parent's SIGKILL) at argv[2]'s
# point: "data" when torch.save is about to write a record and the temp file already holds some
# of the data, "rename" when the temp file is complete and os.replace is about to publish it.
KILLED_WRITER = """
import os, sys, time, torch
from pathlib import Path
from tests.helpers.ckptkit import tiny_checkpoint
from trainer.checkpoint import save_checkpoint
d, where, ready = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
save_checkpoint(d, tiny_checkpoint(5, w=torch.full((4,), 5.0)), keep=3)
state = tiny_checkpoint(10, **{f"w{i}": torch.full((1 << 20,), float(i)) for i in range(4)})

def pause():
    ready.write_text(where)
    time.sleep(600)

def hook(frame, event, arg):
    if event != "c_call":
        return
    if where == "rename" and arg is os.replace:
        pause()
    if where == "data" and getattr(arg, "__name__", "") == "write_record":
        if any(p.stat().st_size > 0 for p in d.glob(".ckpt-000000010.pt.*")):
            pause()

sys.setprofile(hook)
save_checkpoint(d, state, keep=3)
"""


@pytest.mark.parametrize("where", ["data", "rename"])
def test_sigkill_during_checkpoint_write_keeps_the_previous(tmp_path, where):
    ckpts, ready = tmp_path / "checkpoints", tmp_path / "ready"
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(ckpts), where, str(ready)], cwd=ROOT,
                         env=project_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ready.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists(), p.stderr.read() if p.poll() is not None else "writer never reached the point"
        temps = [x for x in ckpts.iterdir() if x.name.startswith(".ckpt-000000010.pt.")]
        size = temps[0].stat().st_size if len(temps) == 1 else None
        assert size is not None and (0 < size < 16 << 20 if where == "data" else size > 16 << 20), size
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    assert [x.name for x in list_checkpoints(ckpts)] == ["ckpt-000000005.pt"]
    state = load_latest(ckpts)  # the temp file is not a checkpoint: the previous one loads
    assert state.step == 5 and torch.equal(state.model["w"], torch.full((4,), 5.0))
    assert temps[0].exists()  # a kill runs no cleanup; the next save removes the dead writer's temp
    save_checkpoint(ckpts, tiny_checkpoint(6), keep=3)
    assert sorted(x.name for x in ckpts.iterdir()) == ["ckpt-000000005.pt", "ckpt-000000006.pt"]


# The writes of argv[2] ("checkpoint" or "shard") after one small good one, with at most argv[3]
# bytes per file (RLIMIT_FSIZE; SIGXFSZ ignored, so the write fails with EFBIG) or on a full
# tmpfs (argv[3] = 0). Prints the error and exits 3 when the big write fails as it must.
FULL_DISK_WRITER = """
import os, resource, signal, sys, torch
from pathlib import Path
from pipeline.wds import Sample, write_shard
from tests.helpers.ckptkit import tiny_checkpoint
from trainer.checkpoint import save_checkpoint
d, what, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if what == "checkpoint":
    save_checkpoint(d, tiny_checkpoint(5, w=torch.full((4,), 5.0)), keep=3)
else:
    write_shard(d / "shard-000000.tar", [Sample("a", b"small", meta={"labels": [0]})])
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    if what == "checkpoint":
        save_checkpoint(d, tiny_checkpoint(10, w=torch.zeros(4 << 20)), keep=3)
    else:
        write_shard(d / "shard-000000.tar", [Sample("a", os.urandom(16 << 20), meta={"labels": [0]})])
except OSError as e:
    print(e)
    sys.exit(3)
"""


@pytest.fixture(params=["rlimit", "tmpfs"])
def small_disk(request, tmp_path):
    """(directory, RLIMIT_FSIZE bytes or 0): a per-file size limit, or a 4 MiB tmpfs (root only)."""
    d = tmp_path / "disk"
    d.mkdir()
    if request.param == "rlimit":
        yield d, 1 << 20
        return
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the rlimit case covers the full disk")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d, 0
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_disk_full_during_checkpoint_write(small_disk):
    d, limit = small_disk
    r = run_python(FULL_DISK_WRITER, d, "checkpoint", limit)
    assert r.returncode == 3, (r.stdout, r.stderr[-3000:])
    assert "cannot write checkpoint" in r.stdout and "ckpt-000000010.pt" in r.stdout and "disk full" in r.stdout
    assert sorted(x.name for x in d.iterdir()) == ["ckpt-000000005.pt"]  # no temp file, the last good one kept
    assert load_latest(d).step == 5


def test_disk_full_during_shard_write(small_disk):
    from pipeline.wds import read_samples

    d, limit = small_disk
    r = run_python(FULL_DISK_WRITER, d, "shard", limit)
    assert r.returncode == 3, (r.stdout, r.stderr[-3000:])
    assert "File too large" in r.stdout or "No space left" in r.stdout
    assert sorted(x.name for x in d.iterdir()) == ["shard-000000.tar"]  # no temp file, the good one kept
    assert [(s.key, s.image) for s in read_samples(d / "shard-000000.tar")] == [("a", b"small")]


# --- 28: resume exactly at an epoch boundary ------------------------------------------------------------


def test_resume_at_an_epoch_boundary_matches_the_uninterrupted_run(tmp_path):
    from trainer.pretrain import main

    shards = make_shards(tmp_path / "shards", n=48, shard_size=8)  # one reader, 48 / 8 = 6 steps an epoch
    run = tmp_path / "run"
    args = [*BASE, "workers=1", f"shards={shards}", f"run_dir={run}", "batch_size=8", "total_samples=144",
            "ckpt_every=6"]
    main(args)  # 3 epochs, checkpoints at the last step of each
    want = metrics(run)
    assert len(want) == 18
    assert read_checkpoint(run / "checkpoints" / "ckpt-000000006.pt").loader == LoaderPosition(epoch=1, batch=0)
    forget_after(run, 6)  # killed during epoch 1: its epochs.jsonl line and metrics are already there
    result = main(args)
    assert result["step"] == 18 and not result["stopped"]
    same_curve(metrics(run), want)
    assert [e["epoch"] for e in map(json.loads, (run / "epochs.jsonl").read_text().splitlines())] == [0, 1, 2]


# --- 30: resuming on another world size -----------------------------------------------------------------


@pytest.mark.multiprocess
def test_pretrain_refuses_another_world_size_unless_allowed(tmp_path, caplog):
    from trainer.data import wds_loader
    from trainer.pretrain import main

    shards = make_shards(tmp_path / "shards", n=64, shard_size=8)
    # why: the WebDataset order is planned per rank x worker, so a global batch of 16 is other
    # samples on 2 ranks x 8 than on 1 rank x 16
    one = wds_loader(shards, batch_size=16, rank=0, world_size=1, num_workers=1, train=True, size=32, seed=3)
    two = [wds_loader(shards, batch_size=8, rank=r, world_size=2, num_workers=1, train=True, size=32, seed=3)
           for r in range(2)]
    first_one = sorted(next(iter(one)).positions.tolist())
    first_two = sorted(p for loader in two for p in next(iter(loader)).positions.tolist())
    assert first_one != first_two
    run = tmp_path / "run"
    args = [*BASE, "workers=1", f"shards={shards}", f"run_dir={run}", "batch_size=16", "total_samples=128",
            "ckpt_every=4"]
    r = torchrun(2, ["-m", "trainer.pretrain", *args], timeout=300)  # two processes x 8
    assert r.returncode == 0, r.stderr[-3000:]
    forget_after(run, 4)
    before = metrics(run)
    with pytest.raises(ValueError) as e:  # one process x 16
        main(args)
    assert "world size 2 with batch 8 per rank" in str(e.value) and "world size 1 with batch 16 per rank" in str(e.value)
    assert "allow_new_data_order=true" in str(e.value)
    assert metrics(run) == before and not (run / "result.json").exists()
    with pytest.raises(ValueError, match="global batch_size 16, this run has 8"):
        main([*args, "batch_size=8"])
    result = main([*args, "allow_new_data_order=true"])
    assert result["step"] == 8 and "not the uninterrupted run's" in caplog.text
    assert [x["step"] for x in metrics(run)] == list(range(1, 9))


FT = ["model=random:vit_tiny_patch16_224", "img_size=32", "log_every=1", "eval_batch_size=12", "steps=9",
      "batch_size=8", "base_lr=2", "mixup_alpha=0", "ema_decay=0.9", "ckpt_every=3", "seed=2", "workers=0"]


def canonical(images: torch.Tensor) -> list[int]:
    """An order of a batch that does not depend on the order it came in."""
    return sorted(range(len(images)), key=lambda i: images[i].flatten().tolist())


def test_finetune_global_batches_do_not_depend_on_the_world_size(tmp_path):
    from trainer.distributed import DistInfo
    from transfer.downstream import load_split
    from transfer.finetune import FinetuneConfig, finetune_loader

    data = make_folder(tmp_path / "data")
    split = load_split(data, "train")
    cfg = FinetuneConfig(model="random:regnety_002", data=str(data), out=str(tmp_path / "x.json"), img_size=32,
                         batch_size=8, workers=0, seed=2)

    def batches(world, epoch, start=0):
        out = []
        for rank in range(world):
            loader = finetune_loader(split, cfg, DistInfo(rank, rank, world, torch.device("cpu")))
            loader.set_epoch(epoch, start)
            out.append(list(loader))
        return [(torch.cat([b[j][0] for b in out]), torch.cat([b[j][1] for b in out])) for j in range(len(out[0]))]

    for epoch, start in ((0, 0), (1, 0), (1, 1)):
        one, two = batches(1, epoch, start), batches(2, epoch, start)
        assert len(one) == len(two) == 3 - start
        for (x1, y1), (x2, y2) in zip(one, two):  # the same samples, with the same crops, in each global batch
            o1, o2 = canonical(x1), canonical(x2)
            assert torch.equal(x1[o1], x2[o2]) and torch.equal(y1[o1], y2[o2])


@pytest.mark.multiprocess
def test_finetune_resumes_on_another_world_size(tmp_path):
    from transfer.finetune import main

    data = make_folder(tmp_path / "data")
    ref = tmp_path / "ref.json"
    main([*FT, f"data={data}", f"out={ref}"])  # uninterrupted, one process x 8
    out = tmp_path / "ft.json"
    r = torchrun(2, ["-m", "transfer.finetune", *FT, f"data={data}", f"out={out}"], timeout=300)  # two processes x 4
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "ft_run"
    forget_after(run, 3)
    out.unlink()
    result = main([*FT, f"data={data}", f"out={out}"])  # one process x 8 from the step-3 checkpoint
    assert result["steps"] == 9 and result["world_size"] == 1
    # no BatchNorm (ViT) and no mixup: the only difference left is float rounding of the reductions
    same_curve(metrics(run), metrics(tmp_path / "ref_run"), rel=1e-4)
    # the EMA is what gets exported: the resumed run must continue the checkpoint's average (1.5e-8
    # apart here from rounding; an EMA restarted at the resume is 1e-3 apart)
    got, want = (load_file(str(r / "export" / "model.safetensors")) for r in (run, tmp_path / "ref_run"))
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k].double(), want[k].double(), rtol=0, atol=1e-5), k


# --- 27: a rank that stalls in its loader ----------------------------------------------------------------

# trainer.pretrain with rank 1's loader stalling before its batch 2 (a hung read); the stalled rank
# takes SIGTERM as a hung process would not hold it off, so torchrun's stop of the group ends it.
STALL_DRIVER = """
import os, signal, sys, time
import trainer.pretrain as pretrain

class Stalling:
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        for j, batch in enumerate(self.loader):
            if j == 2 and os.environ["RANK"] == "1":
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(120)
            yield batch

real = pretrain.make_loader
pretrain.make_loader = lambda *a, **k: Stalling(real(*a, **k))
pretrain.main(sys.argv[1:])
"""


@pytest.mark.multiprocess
def test_a_stalled_rank_times_out_naming_the_rank(tmp_path):
    shards = make_shards(tmp_path / "shards", n=64, shard_size=8)
    driver = tmp_path / "stall_driver.py"
    driver.write_text(STALL_DRIVER)
    run = tmp_path / "run"
    r = torchrun(2, [str(driver), *BASE, "workers=0", f"shards={shards}", f"run_dir={run}", "batch_size=8",
                     "total_samples=64", "collective_timeout_s=10"], timeout=240)
    assert r.returncode != 0
    assert "rank 0 of 2: a collective failed after step 2 (collective_timeout_s=10)" in r.stderr, r.stderr[-4000:]
    assert not (run / "result.json").exists()
