"""What trainer.loop's fit needs of a training loader, declared once. Every loader a trainer hands
to fit implements all of it: trainer/data/wds_reader.py's WdsLoader, ffcv_reader.py's FfcvLoader,
transfer/finetune.py's FinetuneLoader, trainer/lit/pairs.py's PairLoader (pretraining, MAE and
SwAV read the shards through the first two).

An epoch's order is a function of (seed, epoch): fit resumes mid-epoch with set_epoch(epoch,
start), and the loader yields the epoch from batch `start` on without reading the ones before.
"""
from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable


@runtime_checkable
class TrainBatch(Protocol):
    """A batch fit trains on; the rest of it is the Task's business."""

    @property
    def skipped(self) -> tuple[str, ...]:
        """'shard:key: reason' of each sample dropped from the batch as undecodable; () when none
        (fit counts them against cfg.max_bad_samples)."""


@runtime_checkable
class TrainLoader(Protocol):
    """One rank's batches of the global batches, epoch by epoch."""

    @property
    def order_depends_on(self) -> tuple[str, ...]:
        """Which of ("world_size", "workers") the global batches depend on: a resume with other
        values of those is refused unless allow_new_data_order (trainer.checkpoint.Layout)."""

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration yields epoch `epoch` from its batch `start` on."""

    def epoch_batches(self, epoch: int) -> int:
        """Epoch `epoch`'s number of batches, the same on every rank (epochs may differ)."""

    def epoch_stats(self, epoch: int) -> dict:
        """Epoch `epoch`'s line of RUN_DIR/epochs.jsonl: {"samples", "dropped" (beyond the full
        global batches)}."""

    def __iter__(self) -> Iterator[TrainBatch]:
        ...
