"""MAE pre-pretraining (MAWS): `torchrun -m trainer.mae ...` runs trainer/mae/train.py."""
from trainer.mae.train import MaeConfig, main, train

__all__ = ["MaeConfig", "main", "train"]
