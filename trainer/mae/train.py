r"""MAE pre-pretraining of a timm ViT on the shards, labels unused (MAWS appendix A; He et al. 2022).

    torchrun --nproc_per_node=8 -m trainer.mae --config trainer/configs/mae_vit_b16.yaml \
        shards=/data/shards run_dir=runs/mae_b16 [key=value ...]
    python -m trainer.mae --config trainer/configs/mae_demo_cpu.yaml shards=build/demo/shards run_dir=DIR
    torchrun ... -m trainer.pretrain ... init_from=runs/mae_b16/export     # the MAWS second stage

75% of each image's patches are masked (exactly round(L * 0.25) stay visible); the encoder sees
only the visible ones, the decoder predicts the masked patches' per-patch normalized pixels.
The optimizer is the `mae` recipe of trainer/recipes.py (He et al.'s AdamW; no weight decay on
norms, biases), warm-up then half-cosine, as a pure function of samples seen. The loop, checkpoints, resume,
SIGTERM handling, metrics and progress are trainer.loop's, shared with trainer.pretrain. The
run directory holds config.yaml, metrics.jsonl, tb/, checkpoints/, curves.png,
reconstructions.png (and reconstructions/step-*.png with picture_every) and export/.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trainer.config import ShardTrainConfig, key, load_config, to_dict
from trainer.data import make_loader, model_data_config
from trainer.data.shard_set import load_shard_set
from trainer.distributed import DistInfo
from trainer.loop import Task, finish, fit, train_loader
from trainer.mae.export import export_mae
from trainer.mae.model import DecoderSpec, MaskedAutoencoder, build_mae, mask_noise
from trainer.mae.picture import save_grid
from trainer.optim import build_optimizer, peak_lr
from trainer.prepare import Run, prepare, start
from trainer.recipes import recipe

log = logging.getLogger("mae")
RECIPE = "mae"  # trainer/recipes.py
PICTURE_RANK = 10**6  # the picture's masks are drawn as if by a rank no training process has


@dataclass(frozen=True, kw_only=True)
class MaeConfig(ShardTrainConfig):
    model: str = key("vit_base_patch16_224", "timm ViT name (the encoder)")
    mask_ratio: float = key(0.75, "share of each image's patches masked")
    norm_pix_loss: bool = key(True, "predict per-patch normalized pixels")
    decoder_depth: int = key(8, "decoder blocks")
    decoder_width: int = key(512, "decoder embedding width")
    decoder_heads: int = key(16, "decoder attention heads")
    decoder_mlp_ratio: float = key(4.0, "decoder MLP width / embedding width")
    weight_decay: float = key(recipe(RECIPE).weight_decay, "AdamW weight decay (none on norms and biases)")
    batch_size: int = key(4096, "global batch, split evenly over the processes")
    picture_images: int = key(8, "images in each reconstruction picture")
    picture_every: int = key(0, "steps between reconstruction pictures; 0: one at the end of the run")

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.picture_images < 1 or self.picture_every < 0:
            raise ValueError("picture_images must be >= 1 and picture_every >= 0")
        _ = self.decoder  # validates the decoder spec

    @property
    def decoder(self) -> DecoderSpec:
        return DecoderSpec(self.decoder_depth, self.decoder_width, self.decoder_heads, self.decoder_mlp_ratio)


def setup(cfg: MaeConfig, d: DistInfo) -> MaskedAutoencoder:
    """Everything checked before any work: data, model."""
    load_shard_set(cfg.shards)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    return build_mae(cfg.model, cfg.img_size, cfg.decoder, cfg.mask_ratio, cfg.norm_pix_loss)


def picture_batch(cfg: MaeConfig) -> torch.Tensor:
    """The first picture_images images of the shards, evaluation crops: the same in every picture."""
    loader = make_loader(cfg.data_format, cfg.shards, batch_size=cfg.picture_images, rank=0, world_size=1,
                         num_workers=0, train=False, size=cfg.img_size, seed=cfg.seed)
    return next(iter(loader)).images.clone()


class MaeTask(Task):
    """The masked-patch loss, masks drawn from (seed, step, rank); pictures on rank 0."""

    def __init__(self, cfg: MaeConfig, run: Run, mean, std):
        self.cfg, self.run, self.mae = cfg, run, run.model
        self.mean, self.std = mean, std
        self.pictures = picture_batch(cfg) if run.d.is_main else None
        self.picture_noise = mask_noise(cfg.seed, 0, PICTURE_RANK, cfg.picture_images, self.mae.num_patches)

    def picture(self, path: Path, title: str) -> float:
        return save_grid(self.mae, self.pictures, self.mean, self.std, self.picture_noise, path, title)

    def loss(self, batch, step):
        x = self.run.inputs(batch.images)
        noise = mask_noise(self.cfg.seed, step, self.run.d.rank, x.shape[0], self.mae.num_patches).to(x.device)
        with self.run.autocast():
            return self.run.net(x, noise)[0]

    def after_step(self, step):
        every = self.cfg.picture_every
        if self.run.d.is_main and every and step % every == 0:
            self.picture(self.run.run_dir / "reconstructions" / f"step-{step:09d}.png",
                         f"{self.cfg.model} MAE, step {step}")

    def state_dict(self) -> dict:
        return {"mae": {"model": self.cfg.model, "decoder": asdict(self.cfg.decoder)}}


def build(cfg: MaeConfig, d: DistInfo, run_dir: Path):
    """(run, task, loader, peak lr) of an MAE run, prepared (resumed where run_dir has a
    checkpoint); experiments/step_cost.py times the task's steps from here."""
    mae = setup(cfg, d)
    loader = train_loader(cfg, d)
    data_cfg = model_data_config(cfg.model)
    peak = peak_lr(RECIPE, cfg.batch_size, cfg.base_lr)
    # timm parts the MAE encoder never runs (fc_norm of avg-pooled ViTs, attention pools) get no gradient
    unused = any(n.split(".")[0] in ("fc_norm", "attn_pool", "head") for n, _ in mae.encoder.named_parameters())
    run = prepare(cfg, d, mae, lambda m: build_optimizer(RECIPE, m, peak, cfg.weight_decay), run_dir,
                  data_cfg.mean, data_cfg.std, find_unused_parameters=unused)
    return run, MaeTask(cfg, run, data_cfg.mean, data_cfg.std), loader, peak


def train(cfg: MaeConfig) -> dict:
    d = start(cfg)
    run_dir = Path(cfg.run_dir)
    run, task, loader, peak = build(cfg, d, run_dir)
    data_cfg = model_data_config(cfg.model)
    result = fit(cfg, run, task, loader, cfg.steps, peak)

    def outputs():
        result["picture_loss"] = task.picture(run_dir / "reconstructions.png",
                                              f"{cfg.model} MAE after {result['step']} steps")
        export_mae(run.model, run_dir / "export", cfg.model, cfg.img_size, cfg.decoder, {
            "mean": list(data_cfg.mean), "std": list(data_cfg.std), "config": to_dict(cfg)})

    return finish(run, result, outputs)

def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return train(load_config(MaeConfig, argv, "trainer.mae", __doc__))


if __name__ == "__main__":
    main()
