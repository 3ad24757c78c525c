"""LiT: a text tower locked onto a pretrained image tower (trainer/lit/train.py)."""
from trainer.lit.train import LitConfig, main

__all__ = ["LitConfig", "main"]
