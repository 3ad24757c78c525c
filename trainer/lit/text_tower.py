"""LiT's text tower (Zhai et al. 2022): a small pre-LN transformer trained from scratch, pooled
(mean over the real tokens, or the <eos> token's output) and projected linearly to the image
embedding's width, with CLIP's and big_vision's learned temperature t = exp(log_t) (initial 10).

Attention is bidirectional over the real tokens (<pad> is masked out). The temperature is
capped at max_temperature (CLIP's 100), so a runaway scale cannot blow up the logits.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.lit.tokenizer import PAD_ID

POOLINGS = ("mean", "last")


@dataclass(frozen=True)
class TextTowerSpec:
    vocab_size: int
    context_length: int
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    embed_dim: int               # the image embedding's width
    pooling: str = "mean"
    temperature_init: float = 10.0
    max_temperature: float = 100.0

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLINGS)}")
        if min(self.vocab_size, self.context_length, self.width, self.depth, self.heads, self.embed_dim) < 1:
            raise ValueError(f"text tower sizes must be >= 1: {self}")
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by heads {self.heads}")
        if not 0 < self.temperature_init <= self.max_temperature:
            raise ValueError(f"need 0 < temperature_init <= max_temperature, got {self.temperature_init}, "
                             f"{self.max_temperature}")

    def to_dict(self) -> dict:
        return asdict(self)


class TextTower(nn.Module):
    def __init__(self, spec: TextTowerSpec):
        super().__init__()
        self.spec = spec
        self.token = nn.Embedding(spec.vocab_size, spec.width)
        self.position = nn.Parameter(torch.empty(spec.context_length, spec.width))
        layer = nn.TransformerEncoderLayer(spec.width, spec.heads, int(spec.width * spec.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, spec.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(spec.width)
        self.proj = nn.Linear(spec.width, spec.embed_dim, bias=False)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(spec.temperature_init)))
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position, std=0.01)
        nn.init.normal_(self.proj.weight, std=spec.width ** -0.5)

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(max=self.spec.max_temperature)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unit text embeddings [B, embed_dim] of int token rows [B, L] (L <= context_length)."""
        if tokens.shape[1] > self.spec.context_length:
            raise ValueError(f"token rows of {tokens.shape[1]} exceed the context length {self.spec.context_length}")
        real = tokens != PAD_ID
        x = self.token(tokens) + self.position[:tokens.shape[1]]
        x = self.norm(self.blocks(x, src_key_padding_mask=~real))
        if self.spec.pooling == "mean":
            w = real.unsqueeze(-1).to(x.dtype)
            pooled = (x * w).sum(1) / w.sum(1).clamp(min=1)
        else:  # the last real token: <eos>
            last = real.sum(1).clamp(min=1) - 1
            pooled = x[torch.arange(x.shape[0], device=x.device), last]
        return F.normalize(self.proj(pooled), dim=-1)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit text embeddings, temperature): both through forward, so DDP sees every parameter."""
        return self.embed(tokens), self.temperature()
