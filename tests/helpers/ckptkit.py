"""Checkpoint records for the tests of trainer/checkpoint.py's files (writes, kills, fallbacks):
real `Checkpoint`s whose model is a few named tensors, the rest empty."""
import torch

from trainer.checkpoint import Checkpoint, LoaderPosition


def tiny_checkpoint(step: int, **tensors: torch.Tensor) -> Checkpoint:
    """The record of `step` with model state `tensors` (a checkpoint of no real trainer)."""
    return Checkpoint(step=step, samples=step, model=dict(tensors), optimizer={}, scaler={},
                      rng_cpu=torch.get_rng_state(), config={}, task_state={}, loader=LoaderPosition(0, step),
                      layout=None)
