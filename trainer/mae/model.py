"""Masked autoencoder (He et al. 2022; MAWS appendix A) around a timm VisionTransformer.

The encoder is the timm ViT itself (its state dict is what trainer.pretrain's `init_from`
loads), run on the visible patches only; a separate, narrower decoder sees the encoded visible
tokens plus a shared mask token at every masked position and predicts each masked patch's
pixels, normalized per patch. Masking is a pure function of the noise it is given, so the
trainer can draw the noise from (seed, step, rank) and a resumed run masks the same patches.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import timm
import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn


@dataclass(frozen=True)
class DecoderSpec:
    depth: int = 8       # MAE / MAWS defaults: 8 blocks, width 512, 16 heads
    width: int = 512
    heads: int = 16
    mlp_ratio: float = 4.0

    def __post_init__(self):
        if self.depth < 1 or self.heads < 1 or self.width % self.heads or self.width % 4:
            raise ValueError(f"decoder needs depth >= 1 and a width divisible by 4 and by heads, got {self}")


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, (H/p)*(W/p), p*p*3]: patches in row-major order (timm's token order),
    pixels inside a patch ordered (row, column, channel) as in MAE."""
    b, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """The inverse of patchify for an image of h x w pixels."""
    b = patches.shape[0]
    x = patches.reshape(b, h // p, w // p, p, p, -1)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, -1, h, w)


def norm_pix_target(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's normalized-pixel target: each patch minus its mean over its p*p*3 values, divided by
    sqrt(unbiased variance + eps), exactly as the reference implementation (torch.var's default)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


def num_visible(num_patches: int, mask_ratio: float) -> int:
    keep = round(num_patches * (1 - mask_ratio))
    if not 1 <= keep < num_patches:
        raise ValueError(f"mask_ratio {mask_ratio} keeps {keep} of {num_patches} patches; need 1 .. {num_patches - 1}")
    return keep


def random_masking(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, the patches with the smallest noise stay visible: exactly
    round(L * (1 - mask_ratio)) of them. Returns (ids_keep [B, K], mask [B, L] with 1 = masked,
    ids_restore [B, L]: where each patch sits in the [visible, masked] order)."""
    b, n = noise.shape
    keep = num_visible(n, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(b, n, device=noise.device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], torch.gather(mask, 1, ids_restore), ids_restore


def mask_noise(seed: int, step: int, rank: int, batch: int, num_patches: int) -> torch.Tensor:
    """Uniform noise from a generator seeded by (seed, step, rank): a pure function of them."""
    s = np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1)
    return torch.rand(batch, num_patches, generator=torch.Generator().manual_seed(int(s)))


def sincos_pos_embed(width: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [1, gh*gw, width] (MAE's decoder): half the
    channels encode the row, half the column."""
    def one_d(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.reshape(-1, 1).double() * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    emb = torch.cat([one_d(width // 2, rows), one_d(width // 2, cols)], dim=1)
    return emb.float().unsqueeze(0)


class MaeDecoder(nn.Module):
    def __init__(self, enc_dim: int, grid: tuple[int, int], patch: int, spec: DecoderSpec):
        super().__init__()
        self.embed = nn.Linear(enc_dim, spec.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.width))
        self.register_buffer("pos_embed", sincos_pos_embed(spec.width, grid), persistent=False)
        self.blocks = nn.Sequential(*[Block(spec.width, spec.heads, spec.mlp_ratio, qkv_bias=True,
                                            norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))
                                      for _ in range(spec.depth)])
        self.norm = nn.LayerNorm(spec.width, eps=1e-6)
        self.pred = nn.Linear(spec.width, patch * patch * 3)
        for m in self.modules():  # MAE's initialisation of the decoder
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, num_prefix: int) -> torch.Tensor:
        x = self.embed(latent)
        prefix, visible = x[:, :num_prefix], x[:, num_prefix:]
        b, n = ids_restore.shape
        full = torch.cat([visible, self.mask_token.expand(b, n - visible.shape[1], -1).to(x.dtype)], dim=1)
        full = torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([prefix, full + self.pos_embed.to(x.dtype)], dim=1)  # prefix tokens: no position
        x = self.norm(self.blocks(x))
        return self.pred(x[:, num_prefix:])


class MaskedAutoencoder(nn.Module):
    """encoder: a timm VisionTransformer (num_classes=0); decoder: MaeDecoder."""

    def __init__(self, encoder: nn.Module, decoder: DecoderSpec, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True):
        super().__init__()
        check_encoder(encoder)
        self.encoder = encoder
        self.patch = encoder.patch_embed.patch_size[0]
        self.grid = tuple(encoder.patch_embed.grid_size)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        num_visible(self.num_patches, mask_ratio)
        self.decoder = MaeDecoder(encoder.embed_dim, self.grid, self.patch, decoder)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def encode(self, images: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """The timm ViT's forward_features on the visible patches only: [B, prefix + K, D]."""
        vit = self.encoder
        x = vit.patch_embed(images)
        pos, prefix_pos = vit.pos_embed, None
        if not vit.no_embed_class and vit.num_prefix_tokens:
            prefix_pos, pos = pos[:, :vit.num_prefix_tokens], pos[:, vit.num_prefix_tokens:]
        x = x + pos
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        prefix = [t.expand(x.shape[0], -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        if prefix:
            p = torch.cat(prefix, dim=1)
            x = torch.cat([p if prefix_pos is None else p + prefix_pos, x], dim=1)
        x = vit.norm_pre(vit.pos_drop(x))
        return vit.norm(vit.blocks(x))

    def target(self, images: torch.Tensor) -> torch.Tensor:
        t = patchify(images, self.patch)
        return norm_pix_target(t) if self.norm_pix_loss else t

    def forward(self, images: torch.Tensor, noise: torch.Tensor):
        """images: normalized [B, 3, H, W]; noise [B, L]. Returns (loss, pred [B, L, p*p*3], mask [B, L])."""
        ids_keep, mask, ids_restore = random_masking(noise, self.mask_ratio)
        latent = self.encode(images, ids_keep)
        pred = self.decoder(latent, ids_restore, self.encoder.num_prefix_tokens)
        per_patch = ((pred.float() - self.target(images).float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum(), pred, mask


def check_encoder(encoder: nn.Module) -> None:
    if not isinstance(encoder, VisionTransformer):
        raise ValueError(f"MAE needs a timm VisionTransformer (vit_*, deit_*), got {type(encoder).__name__}")
    if encoder.pos_embed is None or encoder.dynamic_img_size:
        raise ValueError("MAE needs a ViT with a fixed absolute position embedding (no dynamic_img_size)")


def build_mae(model: str, img_size: int, decoder: DecoderSpec, mask_ratio: float = 0.75,
              norm_pix_loss: bool = True) -> MaskedAutoencoder:
    """A random-init MAE whose encoder is timm.create_model(model) as trainer.models builds trunks."""
    if not timm.is_model(model):
        raise ValueError(f"unknown timm model {model!r} (e.g. vit_base_patch16_224, vit_tiny_patch16_224)")
    try:
        encoder = timm.create_model(model, pretrained=False, num_classes=0, img_size=img_size, dynamic_img_size=False)
    except TypeError as e:  # a non-ViT timm model has no img_size argument
        raise ValueError(f"MAE needs a timm VisionTransformer (vit_*, deit_*); {model!r}: {e}") from e
    return MaskedAutoencoder(encoder, decoder, mask_ratio, norm_pix_loss)

