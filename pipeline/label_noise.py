"""WSL's label-noise experiment: each label replaced, with probability p, by a label drawn from
the marginal label distribution excluding itself."""
from __future__ import annotations

import numpy as np


def noisy_labels(labels: np.ndarray, u_replace: np.ndarray, u_draw: np.ndarray, p: float,
                 marginal: np.ndarray) -> np.ndarray:
    """Vectorized over label occurrences.

    labels: int label per occurrence; u_replace, u_draw: uniforms in [0, 1) per occurrence (from a
    seeded hash, so the result is a pure function of the data and the seed); marginal: label
    frequencies (any positive scale). A replaced label l becomes j != l with probability
    q_j / (1 - q_l): inverse CDF of q over [0, 1 - q_l), skipping l's interval.
    """
    labels = np.asarray(labels, dtype=np.int64)
    q = np.asarray(marginal, dtype=np.float64)
    q = q / q.sum()
    cum = np.concatenate([[0.0], np.cumsum(q)])
    replace = np.asarray(u_replace) < p
    lo, ql = cum[labels], q[labels]
    v = np.asarray(u_draw) * (1.0 - ql)
    v = np.where(v >= lo, v + ql, v)  # skip the replaced label's own interval
    drawn = np.clip(np.searchsorted(cum, v, side="right") - 1, 0, len(q) - 1)
    drawn = np.where(drawn == labels, (labels + 1) % len(q), drawn)  # float edge at interval ends
    return np.where(replace, drawn, labels).astype(np.int32)
