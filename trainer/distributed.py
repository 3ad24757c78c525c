"""DDP set-up from torchrun's environment: one CPU process (gloo) to many GPU nodes (NCCL)."""
from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Reads RANK/LOCAL_RANK/WORLD_SIZE (set by torchrun); works without them as one process.
    `timeout_s`: how long a collective waits for the other processes before it fails (gloo raises
    on the waiting ranks; NCCL's watchdog aborts the process, logging the rank)."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" \
            and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        # torchrun keeps one rendezvous store for all attempts (torch 2.14), so the restarted ranks
        # can read the gloo/NCCL addresses of the dead ones: connection refused, or a hang
        log.warning("torchrun restart %s on its shared rendezvous store: if the process group fails to "
                    "connect or hangs, run torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (a fresh store "
                    "for every attempt)", os.environ["TORCHELASTIC_RESTART_COUNT"])
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank, local_rank, world, dev)


def cleanup_distributed() -> None:
    """The end of every multi-process run, in the one order that exits cleanly: the caller has
    dropped its DDP wrappers; they are collected here (a DDP reducer freed after its process group
    is destroyed can abort the process: 'terminate called without an active exception'), then
    every rank meets at a barrier, then the group is destroyed."""
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
