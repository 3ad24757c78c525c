"""A trainer's run directory as the tests read and damage it: its curve (metrics.jsonl), the step a
rerun resumed at, and the directory a kill after a given checkpoint leaves."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

# trainer.pretrain small enough for CPU tests (tests/trainer/test_reliability_*.py)
TINY_PRETRAIN = ["model=regnety_002", "img_size=32", "log_every=1", "recipe=sgd", "seed=3", "device=cpu"]


def metrics(run: Path) -> list[dict]:
    """The run's metrics.jsonl, one dict per logged step."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def resumed_at(stderr: str) -> int:
    """The step a rerun says it resumed from ("resumed from ... at step N")."""
    line = next(x for x in stderr.splitlines() if "resumed from" in x)
    return int(line.rsplit("at step ", 1)[1].split()[0])


def forget_after(run: Path, step: int) -> None:
    """The run directory as a kill after `step` leaves it: no later checkpoint, no result or export
    (metrics.jsonl and epochs.jsonl keep the lines the killed run wrote after the checkpoint)."""
    from trainer.checkpoint import list_checkpoints

    for p in list_checkpoints(run / "checkpoints"):
        if int(p.stem.split("-")[1]) > step:
            p.unlink()
    for name in ("result.json", "curves.png"):
        (run / name).unlink(missing_ok=True)
    shutil.rmtree(run / "export", ignore_errors=True)
