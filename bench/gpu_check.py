"""GPU readiness check: bf16 training throughput and MFU fed by the real loaders, FFCV loader
throughput with every core, and a one-GPU NCCL step under torchrun; prints ONE JSON object.

    python -m bench.gpu_check            # CUDA: ViT-B/16 and RegNetY-16GF at 224 px
    python -m bench.gpu_check --tiny     # smoke: vit_tiny_patch16_224 and regnety_002 at 64 px

Without CUDA it always runs the smoke mode (gloo instead of NCCL, MFU null, "device": "cpu").
The data are synthetic JPEGs written as a real shard set (tests/helpers/shardkit.write_shard_set, the
.beton by pipeline.ffcv_writer.write_beton) with a sample index drawn with repeats, in a temp
directory. Models are timm's with random weights (nothing is downloaded). Per model:
train_img_per_s: optimizer steps fed by the loader (data wait included); model_img_per_s: the
same steps on one batch already on the device. MFU = img/s x 3 x forward FLOPs per image
(torch.utils.flop_counter on one forward) / the device's dense bf16 peak (H100/H200/A100 table).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never reach a model hub
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from jobs.lib.config import parse_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# dense (no sparsity) bf16 tensor FLOP/s; the first name contained in the device name wins
PEAK_BF16 = [("H200 NVL", 835.5e12), ("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100 NVL", 835.5e12),
             ("H100", 989.4e12), ("A100", 312.0e12)]
FULL = {"models": {"vit": "vit_base_patch16_224", "regnet": "regnety_160"}, "img_size": 224, "batch_size": 256,
        "warmup": 10, "steps": 30, "images": 2048, "side": 320, "samples": 16384}
TINY = {"models": {"vit": "vit_tiny_patch16_224", "regnet": "regnety_002"}, "img_size": 64, "batch_size": 16,
        "warmup": 1, "steps": 3, "images": 128, "side": 72, "samples": 512}
NUM_CLASSES = 100
_KEEP = []  # FFCV Loaders stay referenced: numba's finalizers print KeyErrors when a used one is collected


@dataclass(frozen=True)
class GpuCheckConfig:
    tiny: bool = field(default=False, metadata={"help": "smoke mode (always without CUDA)"})
    loader: str = field(default="auto", metadata={"help": "training loader: auto (ffcv on CUDA if importable, "
                                                              "else wds) | ffcv | wds"})
    workdir: str | None = field(default=None, metadata={"help": "data directory (default: a temp dir, removed)"})
    ddp_step: bool = field(default=False, metadata={"help": "internal: the process torchrun starts"})
    backend: str = field(default="nccl", metadata={"help": "internal: the --ddp-step backend"})

    def __post_init__(self):
        if self.loader not in ("auto", "ffcv", "wds"):
            raise ValueError(f"--loader must be auto, ffcv or wds, got {self.loader!r}")


def log(msg: str, t0: list = [time.perf_counter()]) -> None:  # noqa: B006 (the start time, once)
    print(f"[gpu-check {time.perf_counter() - t0[0]:6.1f}s] {msg}", file=sys.stderr, flush=True)


def peak_bf16(name: str | None) -> float | None:
    for key, flops in PEAK_BF16:
        if name and key in name:
            return flops
    return None


def build_data(root: Path, p: dict, seed: int = 0) -> dict:
    """Synthetic smooth JPEGs (shorter side p['side']) as a shard set, its .beton when FFCV is
    importable, and a one-epoch sample index of p['samples'] draws with repeats."""
    from PIL import Image

    from tests.helpers.shardkit import add_ffcv, write_sample_index, write_shard_set

    t0, rng = time.perf_counter(), np.random.default_rng(seed)
    members = []
    for i in range(p["images"]):
        small = Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8))
        buf = io.BytesIO()
        small.resize((p["side"] + p["side"] // 8, p["side"]), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        members.append((buf.getvalue(), sorted({int(x) for x in rng.integers(0, NUM_CLASSES, 1 + i % 3)})))
    shards = write_shard_set(root / "shards", members, max(1, p["images"] // 16), NUM_CLASSES, max_side=p["side"])
    ffcv_error = None
    try:  # before the index: it binds to shards.json's bytes
        add_ffcv(shards, label_pad=3, quality=90, num_workers=os.cpu_count() or 1)
    except (ImportError, RuntimeError) as e:
        ffcv_error = str(e).splitlines()[0]
    samples = write_sample_index(shards, root / "samples", [rng.integers(0, p["images"], p["samples"]).tolist()])
    return {"shards": shards, "samples": samples, "ffcv_error": ffcv_error, "seconds": time.perf_counter() - t0}


def make(fmt: str, data: dict, p: dict, workers: int):
    from trainer.data import make_loader

    loader = make_loader(fmt, data["shards"], batch_size=p["batch_size"], rank=0, world_size=1, num_workers=workers,
                         train=True, size=p["img_size"], seed=0, sample_index=str(data["samples"]))
    _KEEP.append(loader)
    return loader


def endless(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(model, size: int, device: torch.device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, size, size, device=device))
    model.train()
    return int(counter.get_total_flops())


def train_check(name: str, loader, p: dict, device: torch.device, peak: float | None) -> dict:
    """Steps fed by `loader`, then the same steps on one resident batch; bf16 autocast, SGD."""
    import torch.nn.functional as F

    from trainer.data import model_data_config
    from trainer.models import create_model

    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES, "linear", p["img_size"]).to(device)
    channels_last = device.type == "cuda" and not name.startswith("vit")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = forward_flops(model, p["img_size"], device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    d = model_data_config(name)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) * 255 for v in (d.mean, d.std))
    losses = []

    def step(images, targets):
        x = images.to(device, non_blocking=True).float().sub_(mean).div_(std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), targets.to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    def timed(batches) -> float:
        for _ in range(p["warmup"]):
            step(*next(batches))
        sync(device)
        t0 = time.perf_counter()
        for _ in range(p["steps"]):
            step(*next(batches))
        sync(device)
        return p["steps"] * p["batch_size"] / (time.perf_counter() - t0)

    it = endless(loader)
    fed = timed((b.images, b.targets) for b in it)
    b = next(it)
    it.close()
    resident = (b.images.to(device).clone(), b.targets.to(device).clone())
    only = timed(iter(lambda: resident, None))
    train_flops = 3 * fwd
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    model = opt = None  # freed before the next model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"model": name, "img_size": p["img_size"], "batch_size": p["batch_size"], "steps": p["steps"],
            "dtype": "bf16", "channels_last": channels_last, "train_img_per_s": fed, "model_img_per_s": only,
            "forward_gflops_per_img": fwd / 1e9, "train_gflops_per_img": train_flops / 1e9,
            "mfu": fed * train_flops / peak if peak else None,
            "mfu_model_only": only * train_flops / peak if peak else None, "loss_finite": finite}


def loader_check(loader, epochs: int = 2) -> dict:
    """Images/s of full epochs of `loader` (after a few warm-up batches: FFCV compiles first)."""
    loader.set_epoch(0)
    it = iter(loader)
    for _ in range(min(3, len(loader))):
        next(it)
    if hasattr(it, "close"):
        it.close()
    del it
    n, t0 = 0, time.perf_counter()
    for e in range(1, epochs + 1):
        loader.set_epoch(e)
        for b in loader:
            n += b.images.shape[0]
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "img_per_s": n / dt}


def torchrun_step(backend: str, timeout: int = 300) -> dict:
    """`torchrun --standalone --nproc_per_node=1 -m bench.gpu_check --ddp-step --backend B`."""
    exe = Path(sys.executable).parent / "torchrun"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", "--nproc_per_node=1", "-m", "bench.gpu_check", "--ddp-step", "--backend", backend]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "ok": False, "seconds": time.perf_counter() - t0, "error": f"timeout {timeout}s"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    child = json.loads(lines[-1]) if lines else {}
    res = {"backend": backend, "ok": r.returncode == 0 and bool(child.get("ok")), "returncode": r.returncode,
           "seconds": time.perf_counter() - t0, "step_seconds": child.get("seconds"),
           "world_size": child.get("world_size")}
    if not res["ok"]:
        res["error"] = (r.stderr or r.stdout)[-2000:]
    return res


def ddp_step(backend: str) -> None:
    """The process torchrun starts: a process group with `backend`, one DDP step, an all_reduce."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    t0 = time.perf_counter()
    local = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        torch.cuda.set_device(local)
    dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    dist.init_process_group(backend)
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(64, 8).to(dev), device_ids=[local] if backend == "nccl" else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(32, 64, device=dev)).square().mean()
    loss.backward()
    opt.step()
    t = torch.full((1,), float(dist.get_rank() + 1), device=dev)
    dist.all_reduce(t)
    world = dist.get_world_size()
    ok = bool(t.item() == world * (world + 1) / 2 and torch.isfinite(loss).item())
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps({"ok": ok, "backend": backend, "world_size": world, "seconds": time.perf_counter() - t0}),
          flush=True)


def run(cfg: GpuCheckConfig) -> dict:
    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tiny = cfg.tiny or not cuda
    p = TINY if tiny else FULL
    name = torch.cuda.get_device_name(device) if cuda else None
    peak = peak_bf16(name)
    if cuda:
        torch.backends.cudnn.benchmark = True
    out = {"device": name if cuda else "cpu", "tiny": tiny, "cpus": os.cpu_count(), "torch": torch.__version__,
           "peak_bf16_flops": peak}
    with contextlib.ExitStack() as stack:
        root = Path(cfg.workdir) if cfg.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        data = build_data(root, p)
        have_ffcv = data["ffcv_error"] is None
        # auto: FFCV on CUDA; the CPU smoke trains from the WebDataset reader in-process (FFCV's
        # Loader sets torch's thread count on every epoch) and times FFCV alone
        fmt = ("ffcv" if have_ffcv and cuda else "wds") if cfg.loader == "auto" else cfg.loader
        if fmt == "ffcv" and not have_ffcv:
            raise SystemExit(f"--loader ffcv: {data['ffcv_error']}")
        cores = os.cpu_count() or 1
        workers = cores if fmt == "ffcv" else (0 if tiny else min(cores, 16))
        ffcv = make("ffcv", data, p, cores) if have_ffcv else None  # one Loader: FFCV compiles once
        loader = ffcv if fmt == "ffcv" else make("wds", data, p, workers)
        out.update(loader=fmt, loader_workers=workers,
                   data={"images": p["images"], "side": p["side"], "samples": p["samples"],
                         "seconds": data["seconds"], "ffcv_error": data["ffcv_error"]})
        log(f"data ready ({data['seconds']:.1f}s); training loader {fmt} with {workers} workers")
        if not cuda:  # smoke: one intra-op thread, which spins no CPU away on a busy host
            torch.set_num_threads(1)
        out["torch_threads"] = torch.get_num_threads()
        for role, model in p["models"].items():
            out[role] = train_check(model, loader, p, device, peak)
            log(f"{model}: {out[role]['train_img_per_s']:.1f} img/s fed, {out[role]['model_img_per_s']:.1f} resident")
        out["ffcv_loader"] = {"workers": cores, **loader_check(ffcv)} if ffcv else None
        log(f"FFCV loader: {out['ffcv_loader']}")
        out["torchrun"] = torchrun_step("nccl" if cuda else "gloo")
        log(f"torchrun: {out['torchrun']}")
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(GpuCheckConfig, argv, __doc__.splitlines()[0])
    if cfg.ddp_step:
        ddp_step(cfg.backend)
        return {}
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON object only
        out = run(cfg)
    print(json.dumps(out), file=stdout, flush=True)
    return out


if __name__ == "__main__":
    main()
