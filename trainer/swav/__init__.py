"""SwAV self-supervised pretraining (trainer/swav/train.py): `torchrun -m trainer.swav`."""
from trainer.swav.train import SwavConfig, main, train

__all__ = ["SwavConfig", "main", "train"]
