"""What a person sees: a progress bar on rank 0, metrics.jsonl, TensorBoard events, a PNG."""
from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.atomic import write_text_atomic


def _step(line: str) -> float:
    """A record's step; a line cut short by a kill mid-write counts as past every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


class MetricsLog:
    """Rank 0 only: JSON lines (one object per logged step) + TensorBoard scalars."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            if self.path.exists():  # a resumed run: drop records past the checkpoint it resumes
                keep = [ln for ln in self.path.read_text().splitlines() if _step(ln) <= resume_step]
                write_text_atomic(self.path, "".join(k + "\n" for k in keep))
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)
            except Exception:  # tensorboard missing: JSON lines still work
                self.tb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Progress:
    """tqdm bar over samples with img/s, loss, lr and ETA (rank 0)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self.t0, self.n0 = time.time(), initial
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="img", dynamic_ncols=True, mininterval=2)

    def update(self, n: int, samples: int, loss: float, lr: float) -> float:
        rate = (samples - self.n0) / max(1e-9, time.time() - self.t0)
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        return rate

    def close(self):
        if self.bar is not None:
            self.bar.close()


def plot_curves(metrics_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot([r["samples"] for r in rows], [r["loss"] for r in rows])
    a.set(xlabel="samples seen", ylabel="training loss", title="loss")
    b.plot([r["samples"] for r in rows], [r["lr"] for r in rows], color="tab:orange")
    b.set(xlabel="samples seen", ylabel="learning rate", title="lr schedule")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
