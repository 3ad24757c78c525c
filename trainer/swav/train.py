r"""SwAV on the shards' images, labels unused (Caron et al. 2020; SEER, Goyal et al. 2021): the
self-supervised baseline SWAG compares hashtag supervision with.

    torchrun --nproc_per_node=8 -m trainer.swav --config trainer/configs/swav_regnety_16gf.yaml \
        shards=/data/shards run_dir=runs/swav_r16 [key=value ...]
    python -m trainer.swav --config trainer/configs/swav_regnety_demo_cpu.yaml shards=build/demo/shards run_dir=DIR

Each image gives global_crops views of img_size and local_crops of local_size
(trainer/data/multicrop.py); the trunk embeds each resolution's views together, the head
(trainer/swav/head.py) projects them to `dim` and scores them against K unit prototypes. The
codes of each global view come from Sinkhorn-Knopp over the global batch (all-reduced), and
every other view predicts them (trainer/swav/loss.py). Prototypes are renormalised after every
step and get no update for the first freeze_prototypes_steps. With queue_length > 0, from
queue_start_step each rank keeps its last queue_length / world_size global-view embeddings,
whose scores join the batch's in Sinkhorn-Knopp once the queue is full (the SwAV README: use a
queue when the batch is small against K, and start it late: early, it destabilises training).

Watched in metrics.jsonl: proto_used (prototypes that are some global view's nearest, over the
steps since the last record, all ranks), proto_entropy (entropy of that histogram / ln of the
most prototypes it could use), prediction_entropy (mean entropy of a view's softmax over the
prototypes / ln K: at 1 the predictions are uniform) and loss_vs_ln_k (loss / ln K). The run
warns on a loss stuck at ln K with uniform predictions (collapse) and on under a tenth of the
prototypes in use (swav#118: empty prototypes).

The loop, checkpoints (with each rank's queue), exact resume, SIGTERM, metrics and progress are
trainer.loop's. The export is the trunk as a timm model plus the swav head: every transfer
protocol but zero-shot (which needs hashtags) loads it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.config import ShardTrainConfig, key, load_config, to_dict
from trainer.data import make_loader, model_data_config
from trainer.data.multicrop import MultiCrop, MultiCropSpec
from trainer.data.shard_set import load_shard_set
from trainer.distributed import DistInfo
from trainer.export import export_model
from trainer.loop import Task, finish, fit, train_loader
from trainer.optim import build_optimizer, peak_lr
from trainer.prepare import Run, prepare, start
from trainer.recipes import check_recipe, describe
from trainer.swav.loss import swapped_prediction
from trainer.swav.model import SwavModel, create_swav

log = logging.getLogger("swav")
ALLOWED_RECIPES = ("swav", "seer", "sgd")


@dataclass(frozen=True, kw_only=True)
class SwavConfig(ShardTrainConfig):
    model: str = key("regnety_002", "timm trunk (RegNetY as in SEER; a ViT gets dynamic_img_size)")
    global_crops: int = key(2, "global views per image, of side img_size; their codes are swapped")
    global_scale: tuple[float, ...] = key((0.14, 1.0), "RandomResizedCrop scale of the global views")
    local_crops: int = key(6, "local views per image")
    local_size: int = key(96, "side of the local views")
    local_scale: tuple[float, ...] = key((0.05, 0.14), "RandomResizedCrop scale of the local views")
    jitter: float = key(1.0, "colour distortion strength s: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p 0.8")
    blur_p: float = key(0.5, "probability of Gaussian blur per view")
    prototypes: int = key(3000, "K")
    hidden_dim: int = key(2048, "projection MLP width (0: one linear layer)")
    dim: int = key(128, "embedding width")
    temperature: float = key(0.1, "softmax temperature of the swapped prediction")
    epsilon: float = key(0.05, "Sinkhorn-Knopp regularisation")
    sinkhorn_iters: int = key(3, "Sinkhorn-Knopp iterations")
    freeze_prototypes_steps: int = key(313, "steps at the start with no prototype update")
    queue_length: int = key(0, "global queue of global-view embeddings (0: none); a multiple of batch_size")
    queue_start_step: int = key(0, "step from which the queue fills")
    recipe: str = key("swav", f"optimizer recipe (trainer/recipes.py): {describe(ALLOWED_RECIPES)}")
    weight_decay: float | None = key(None, "null: the recipe's (none on norms and biases)")
    batch_size: int = key(4096, "global batch, split evenly over the processes")

    def __post_init__(self):
        super().__post_init__()
        _ = self.multicrop  # validates the views
        check_recipe(self.recipe, ALLOWED_RECIPES, "SwAV")
        if self.prototypes < 2 or self.dim < 1 or self.hidden_dim < 0:
            raise ValueError(f"need prototypes >= 2, dim >= 1, hidden_dim >= 0; got {self.prototypes}, "
                             f"{self.dim}, {self.hidden_dim}")
        if self.temperature <= 0 or self.epsilon <= 0 or self.sinkhorn_iters < 1:
            raise ValueError(f"need temperature > 0, epsilon > 0, sinkhorn_iters >= 1; got {self.temperature}, "
                             f"{self.epsilon}, {self.sinkhorn_iters}")
        if self.freeze_prototypes_steps < 0 or self.queue_start_step < 0 or self.queue_length < 0:
            raise ValueError("freeze_prototypes_steps, queue_start_step and queue_length must be >= 0")
        if self.queue_length % self.batch_size:
            raise ValueError(f"queue_length {self.queue_length} must be a multiple of batch_size {self.batch_size}")
        if self.data_format != "wds":
            raise ValueError(f"data_format={self.data_format}: SwAV's multi-crop views (colour jitter, blur) are "
                             "built by the WebDataset reader; use data_format=wds")

    @property
    def multicrop(self) -> MultiCropSpec:
        return MultiCropSpec(self.global_crops, self.img_size, tuple(self.global_scale), self.local_crops,
                             self.local_size, tuple(self.local_scale), self.jitter, blur_p=self.blur_p)

    @property
    def head_args(self) -> dict:
        return {"hidden": self.hidden_dim, "dim": self.dim}


def setup(cfg: SwavConfig, d: DistInfo) -> SwavModel:
    """Everything checked before any work: data, model."""
    load_shard_set(cfg.shards)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    return create_swav(cfg.model, cfg.prototypes, cfg.img_size, cfg.head_args)


class SwavTask(Task):
    def __init__(self, cfg: SwavConfig, run: Run):
        self.cfg, self.run, self.model = cfg, run, run.model
        self.assign = tuple(range(cfg.global_crops))
        self.views = cfg.global_crops + cfg.local_crops
        self.rank_queue = cfg.queue_length // run.d.world_size
        self.queue: torch.Tensor | None = None
        self.use_queue = False
        self.counts = torch.zeros(cfg.prototypes, dtype=torch.float64, device=run.d.device)
        self.entropy_sum = torch.zeros(2, dtype=torch.float64, device=run.d.device)  # sum of entropies, rows
        self.stuck = 0

    def loss(self, batch, step):
        views = [self.run.inputs(v) for v in batch.images]
        b = views[0].shape[0]
        if self.rank_queue and step >= self.cfg.queue_start_step and self.queue is None:
            self.queue = torch.zeros(len(self.assign), self.rank_queue, self.cfg.dim, device=self.run.d.device)
        with self.run.autocast():
            z, scores = self.run.net(views)
        queue_scores = None
        if self.queue is not None:
            self.use_queue = self.use_queue or bool(torch.any(self.queue[:, -1] != 0))
            if self.use_queue:
                with torch.no_grad():
                    w = self.model.head.prototypes.weight.detach()
                    queue_scores = [self.queue[n] @ w.t().to(self.queue.dtype) for n in range(len(self.assign))]
            with torch.no_grad():  # the oldest b leave, this batch's global views come in first
                self.queue[:, b:] = self.queue[:, :-b].clone()
                for n, i in enumerate(self.assign):
                    self.queue[n, :b] = z[i * b:(i + 1) * b].detach().float()
        with torch.no_grad():
            own = scores[:len(self.assign) * b].detach().float()
            self.counts += torch.bincount(own.argmax(dim=1), minlength=self.cfg.prototypes).to(self.counts.dtype)
            logp = torch.log_softmax(own / self.cfg.temperature, dim=1)
            self.entropy_sum += torch.tensor([-(logp.exp() * logp).sum().item(), own.shape[0]],
                                             dtype=torch.float64, device=own.device)
        return swapped_prediction(scores, b, self.views, self.assign, self.cfg.temperature, self.cfg.epsilon,
                                  self.cfg.sinkhorn_iters, queue_scores)

    def after_backward(self, step):
        if step < self.cfg.freeze_prototypes_steps:
            self.model.head.prototypes.weight.grad = None  # no update at all, weight decay included

    def after_step(self, step):
        self.model.head.normalize_prototypes()

    def log_metrics(self, step, loss):
        counts, ent = self.counts.clone(), self.entropy_sum.clone()
        if dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(ent)
        self.counts.zero_()
        self.entropy_sum.zero_()
        k, seen = self.cfg.prototypes, counts.sum().item()
        prediction_entropy = float(ent[0] / ent[1] / math.log(k))
        p = counts[counts > 0] / seen
        most = min(k, int(seen))
        entropy = float(-(p * p.log()).sum() / math.log(most)) if most > 1 else 0.0
        used = int((counts > 0).sum())
        ratio = loss / math.log(k)
        past_freeze = step > self.cfg.freeze_prototypes_steps
        self.stuck = self.stuck + 1 if past_freeze and prediction_entropy > 0.99 and abs(ratio - 1) < 0.02 else 0
        if self.run.d.is_main and self.stuck == 3:
            log.warning("step %d: the SwAV loss has stayed at ln K (%.3f) for 3 records and the predictions are "
                        "uniform over the prototypes (collapse). Lower the lr, start the queue later or use fewer "
                        "prototypes", step, math.log(k))
        if self.run.d.is_main and past_freeze and used < 0.1 * most:
            log.warning("step %d: %d of %d prototypes are some view's nearest (swav#118: empty prototypes)",
                        step, used, k)
        return {"proto_used": used, "proto_entropy": entropy, "prediction_entropy": prediction_entropy,
                "loss_vs_ln_k": ratio, "queue_in_use": self.use_queue}

    def state_dict(self) -> dict:
        """Every rank's queue, gathered to [world, views, L, dim] (rank 0's is saved)."""
        state = {"swav": {"use_queue": self.use_queue}}
        if self.queue is not None:
            q = self.queue.contiguous()
            parts = [torch.empty_like(q) for _ in range(self.run.d.world_size)] if dist.is_initialized() else [q]
            if dist.is_initialized():
                dist.all_gather(parts, q)
            state["swav"]["queue"] = torch.stack(parts).cpu()
        return state

    def load_state_dict(self, state):
        saved = state.get("swav", {})
        self.use_queue = bool(saved.get("use_queue", False))
        queue = saved.get("queue")
        if queue is None:  # no queue saved: whatever the flag says, there is nothing full to use
            self.use_queue = False
            return
        if queue.shape[0] != self.run.d.world_size or queue.shape[2] != self.rank_queue:
            if self.run.d.is_main:
                log.warning("the checkpoint's queues are %d x %d embeddings, this run has %d ranks x %d: the queue "
                            "starts empty", queue.shape[0], queue.shape[2], self.run.d.world_size, self.rank_queue)
            self.use_queue = False
            return
        self.queue = queue[self.run.d.rank].to(self.run.d.device)


def build(cfg: SwavConfig, d: DistInfo, run_dir: Path, make=make_loader):
    """(run, task, loader, peak lr) of a SwAV run, prepared (resumed where run_dir has a checkpoint)."""
    model = setup(cfg, d)
    loader = train_loader(cfg, d, make, transform=MultiCrop(cfg.multicrop))
    data_cfg = model_data_config(cfg.model)
    peak = peak_lr(cfg.recipe, cfg.batch_size, cfg.base_lr)
    run = prepare(cfg, d, model, lambda m: build_optimizer(cfg.recipe, m, peak, cfg.weight_decay), run_dir,
                  data_cfg.mean, data_cfg.std)
    return run, SwavTask(cfg, run), loader, peak


def train(cfg: SwavConfig) -> dict:
    d = start(cfg)
    run_dir = Path(cfg.run_dir)
    run, task, loader, peak = build(cfg, d, run_dir)
    result = fit(cfg, run, task, loader, cfg.steps, peak)
    data_cfg = model_data_config(cfg.model)
    return finish(run, result, lambda: export_model(run.model, run_dir / "export", {
        "model": cfg.model, "head": "swav", "num_classes": cfg.prototypes, "labels": [], "head_args": cfg.head_args,
        "img_size": cfg.img_size, "input_size": [3, cfg.img_size, cfg.img_size], "mean": list(data_cfg.mean),
        "std": list(data_cfg.std), "config": to_dict(cfg)}))


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return train(load_config(SwavConfig, argv, "trainer.swav", __doc__))

