"""MAE pre-pretraining of a timm ViT on the shards, labels unused (MAWS appendix A; He et al. 2022).

    torchrun --nproc_per_node=8 -m trainer.mae --config trainer/configs/mae_vit_b16.yaml \
        shards=/data/shards run_dir=runs/mae_b16 [key=value ...]
    python -m trainer.mae --config trainer/configs/mae_demo_cpu.yaml shards=build/demo/shards run_dir=DIR
    torchrun ... -m trainer.pretrain ... init_from=runs/mae_b16/export     # the MAWS second stage

75% of each image's patches are masked (exactly round(L * 0.25) stay visible); the encoder sees
only the visible ones, the decoder predicts the masked patches' per-patch normalized pixels.
AdamW (0.9, 0.95), lr 1.5e-4 per 256 scaled linearly, wd 0.05 (none on norms, biases),
warm-up then half-cosine, as a pure function of samples seen. The loop, checkpoints, resume,
SIGTERM handling, metrics and progress are trainer.loop's, shared with trainer.pretrain. The
run directory holds config.yaml, metrics.jsonl, tb/, checkpoints/, curves.png,
reconstructions.png (and reconstructions/step-*.png with picture_every) and export/.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml

from trainer.checkpoint import unwrap
from trainer.config import load_config, to_dict
from trainer.data import make_loader, model_data_config
from trainer.distributed import DistInfo, cleanup_distributed, setup_distributed
from trainer.loop import fit, resume, train_loader
from trainer.mae.export import export_mae
from trainer.mae.model import DecoderSpec, MaskedAutoencoder, build_mae, mask_noise
from trainer.mae.picture import save_grid
from trainer.run_log import plot_curves
from trainer.optim import build_optimizer, peak_lr
from trainer.runtime import autocast, read_shards

log = logging.getLogger("mae")
PICTURE_RANK = 10**6  # the picture's masks are drawn as if by a rank no training process has


@dataclass(frozen=True)
class MaeConfig:
    shards: str
    run_dir: str
    total_samples: int
    model: str = "vit_base_patch16_224"
    img_size: int = 224
    data_format: str = "wds"
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_depth: int = 8
    decoder_width: int = 512
    decoder_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    base_lr: float | None = None      # per 256 images (MAE: 1.5e-4), scaled linearly to batch_size
    weight_decay: float = 0.05
    batch_size: int = 4096            # global
    warmup_frac: float = 0.05
    grad_clip: float | None = None
    precision: str = "auto"           # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False
    workers: int = 2
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 100             # steps
    keep_ckpts: int = 3
    picture_images: int = 8
    picture_every: int = 0            # steps; 0: one picture at the end of the run
    device: str = "auto"

    def __post_init__(self):
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.base_lr is not None and self.base_lr <= 0:
            raise ValueError(f"base_lr must be > 0, got {self.base_lr}")
        if self.batch_size <= 0 or self.total_samples < self.batch_size:
            raise ValueError(f"need 0 < batch_size <= total_samples, got {self.batch_size}, {self.total_samples}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError("warmup_frac must be in [0, 1)")
        if self.picture_images < 1 or self.picture_every < 0:
            raise ValueError("picture_images must be >= 1 and picture_every >= 0")
        _ = self.decoder  # validates the decoder spec

    @property
    def steps(self) -> int:
        return self.total_samples // self.batch_size

    @property
    def decoder(self) -> DecoderSpec:
        return DecoderSpec(self.decoder_depth, self.decoder_width, self.decoder_heads, self.decoder_mlp_ratio)


def setup(cfg: MaeConfig, d: DistInfo) -> MaskedAutoencoder:
    """Everything checked before any work: data, model, batch divisibility."""
    if cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {d.world_size}")
    read_shards(cfg.shards, cfg.data_format)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    return build_mae(cfg.model, cfg.img_size, cfg.decoder, cfg.mask_ratio, cfg.norm_pix_loss)


def picture_batch(cfg: MaeConfig) -> torch.Tensor:
    """The first picture_images images of the shards, evaluation crops: the same in every picture."""
    loader = make_loader(cfg.data_format, cfg.shards, batch_size=cfg.picture_images, rank=0, world_size=1,
                         num_workers=0, train=False, size=cfg.img_size, seed=cfg.seed)
    return next(iter(loader)).images.clone()


def train(cfg: MaeConfig) -> dict:
    d = setup_distributed(cfg.device)
    mae = setup(cfg, d)
    run_dir = Path(cfg.run_dir)
    data_cfg = model_data_config(cfg.model)
    mean = torch.tensor(data_cfg.mean, device=d.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(data_cfg.std, device=d.device).view(1, 3, 1, 1) * 255
    mae = mae.to(d.device)
    peak = peak_lr("mae", cfg.batch_size, cfg.base_lr)
    optimizer = build_optimizer("mae", mae, peak, cfg.weight_decay)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if d.device.type == "cuda" else "fp32")
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")
    step = resume(run_dir, mae, optimizer, scaler, d)
    # timm parts the MAE encoder never runs (fc_norm of avg-pooled ViTs, attention pools) get no gradient
    unused = any(n.split(".")[0] in ("fc_norm", "attn_pool", "head") for n, _ in mae.encoder.named_parameters())
    ddp = torch.nn.parallel.DistributedDataParallel(mae, find_unused_parameters=unused) if d.world_size > 1 else mae
    net = torch.compile(ddp) if cfg.compile else ddp
    pictures = None
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        pictures = picture_batch(cfg)
    picture_noise = mask_noise(cfg.seed, 0, PICTURE_RANK, cfg.picture_images, mae.num_patches)

    def picture(path: Path, title: str) -> float:
        return save_grid(mae, pictures, data_cfg.mean, data_cfg.std, picture_noise, path, title)

    def loss_of(batch, step):
        x = batch.images.to(d.device, non_blocking=True).float().sub_(mean).div_(std)
        noise = mask_noise(cfg.seed, step, d.rank, x.shape[0], mae.num_patches).to(d.device)
        with autocast(d.device, precision):
            return net(x, noise)[0]

    def after_step(step):
        if d.is_main and cfg.picture_every and step % cfg.picture_every == 0:
            picture(run_dir / "reconstructions" / f"step-{step:09d}.png", f"{cfg.model} MAE, step {step}")

    loader = train_loader(cfg, d)
    result = fit(cfg, d, mae, net, optimizer, scaler, peak, step, loader, loss_of,
                 {"mae": {"model": cfg.model, "decoder": asdict(cfg.decoder)}}, after_step)
    if d.is_main and not result["stopped"]:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        result["picture_loss"] = picture(run_dir / "reconstructions.png",
                                         f"{cfg.model} MAE after {result['step']} steps")
        export_mae(unwrap(mae), run_dir / "export", cfg.model, cfg.img_size, cfg.decoder, {
            "mean": list(data_cfg.mean), "std": list(data_cfg.std), "config": to_dict(cfg)})
        (run_dir / "result.json").write_text(json.dumps(result))
    cleanup_distributed()
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(MaeConfig, sys.argv[1:] if argv is None else argv)
    return train(cfg)


if __name__ == "__main__":
    main()
