"""The per-group figures of SWAG section 5 / appendix F and SEER's fairness indicators, as pure
numpy functions of scores, labels and group ids (the commands in this package only read data and
a model, call these, and write what they return).

Conventions: `groups` is an int array [N] of group indices 0..G-1 (data.group_index makes it from
a column); a figure per group is a [G] or [G, H] array; `nan` where a group has nothing to say
(no image of a class, no other group to compare with). Confidence intervals come from ci.py.
"""
from __future__ import annotations

import numpy as np

INCOME_BUCKETS = ("low", "medium", "high")


def top_k(scores, k: int) -> np.ndarray:
    """[N, k] column indices of each row's k highest scores, best first (ties: lower index first)."""
    s = np.asarray(scores, dtype=np.float64)
    k = min(k, s.shape[1])
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def hits_any(pred: np.ndarray, label_sets: list) -> np.ndarray:
    """1.0 where any of an image's labels is among its predicted indices [N, k] (SEER's top-5 hit
    rate: an image with several labels counts once, as a hit if any of them is predicted)."""
    pred = np.asarray(pred)
    if len(pred) != len(label_sets):
        raise ValueError(f"{len(pred)} predictions for {len(label_sets)} label sets")
    return np.array([float(bool(set(p.tolist()) & set(ls))) for p, ls in zip(pred, label_sets)])


def cluster_means(values, clusters) -> tuple[np.ndarray, np.ndarray]:
    """(cluster ids in first-seen order, mean of `values` per cluster): SEER averages an image
    figure per household before averaging households, so a household photographed 40 times
    weighs as much as one photographed 4 times."""
    values, clusters = np.asarray(values, dtype=np.float64), np.asarray(clusters)
    ids, first, inv = np.unique(clusters, return_index=True, return_inverse=True)
    order = np.argsort(first)
    sums = np.zeros((len(ids),) + values.shape[1:])
    np.add.at(sums, inv.reshape(-1), values)
    counts = np.bincount(inv.reshape(-1), minlength=len(ids)).reshape((-1,) + (1,) * (values.ndim - 1))
    return ids[order], (sums / counts)[order]


def group_means(values, groups, num_groups: int, clusters=None) -> np.ndarray:
    """[G, ...] mean of `values` [N, ...] per group; with `clusters` (household ids), the mean over
    the group's clusters of each cluster's mean. nan for a group with no image."""
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    out = np.full((num_groups,) + values.shape[1:], np.nan)
    for g in range(num_groups):
        rows = groups == g
        if not rows.any():
            continue
        v = values[rows]
        out[g] = (cluster_means(v, np.asarray(clusters)[rows])[1] if clusters is not None else v).mean(0)
    return out


def income_bucket(income) -> np.ndarray:
    """Dollar Street's monthly income in USD -> "low" / "medium" / "high" by round(ln(income) / 3):
    VISSL's rule (projects/fairness_indicators/geographical_diversity/
    inference_geographical_diversity.py, add_log_income: {1: low, 2: medium, 3: high}[np.round(
    np.log(income) / 3)], numpy's round, half to even), so low < e^4.5 ~ $90 <= medium < e^7.5 ~
    $1808 <= high. VISSL has no bucket for 0 or 4 (incomes under e^1.5 ~ $4.5 or from e^10.5 ~
    $36k, outside Dollar Street's range) and stops there; here they join low and high."""
    x = np.asarray(income, dtype=np.float64)
    if (~np.isfinite(x)).any() or (x <= 0).any():
        bad = x[~np.isfinite(x) | (x <= 0)]
        raise ValueError(f"incomes must be positive numbers; got {bad[:5].tolist()}")
    b = np.clip(np.round(np.log(x) / 3), 1, 3).astype(int)
    return np.array([INCOME_BUCKETS[i - 1] for i in b])


def class_group_accuracy(correct, labels, groups, num_classes: int, num_groups: int) -> np.ndarray:
    """[G, C] accuracy of the images of class c in group g (nan where the group has none)."""
    correct, labels, groups = (np.asarray(a) for a in (correct, labels, groups))
    n = np.zeros((num_groups, num_classes))
    hit = np.zeros((num_groups, num_classes))
    np.add.at(n, (groups, labels), 1)
    np.add.at(hit, (groups, labels), correct.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hit / np.maximum(n, 1), np.nan)


def eighty_percent_matrix(acc, rule: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """SWAG's 80% rule (appendix F.1, the heat map): for countries r (row) and c (column), the
    percentage of classes, among those with images in both, whose accuracy in r is below `rule`
    (0.8) times its accuracy in c. acc: [..., G, C] class_group_accuracy (leading axes: bootstrap
    replicates). Returns (percent [..., G, G], the number of shared classes [..., G, G]); nan
    where two countries share no class; 0 on the diagonal."""
    acc = np.asarray(acc, dtype=np.float64)
    have = ~np.isnan(acc)
    shared = have[..., :, None, :] & have[..., None, :, :]
    with np.errstate(invalid="ignore"):
        below = (acc[..., :, None, :] < rule * acc[..., None, :, :]) & shared
    n = shared.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(n > 0, 100.0 * below.sum(-1) / np.maximum(n, 1), np.nan)
    return pct, n


def indicator_matrix(pred, num_labels: int) -> np.ndarray:
    """[N, H] 1.0 where label h is among image n's predicted indices [N, k]."""
    pred = np.asarray(pred)
    x = np.zeros((len(pred), num_labels))
    np.put_along_axis(x, pred, 1.0, axis=1)
    return x


def others_mean(rates) -> np.ndarray:
    """[..., G, H]: for each group, the mean rate of the other groups (groups weigh equally, as
    SWAG's "the average over the other groups"); nan with a single group. Leading axes (bootstrap
    replicates) pass through."""
    r = np.asarray(rates, dtype=np.float64)
    G = r.shape[-2]
    if G < 2:
        return np.full_like(r, np.nan)
    return (r.sum(-2, keepdims=True) - r) / (G - 1)


def association_differences(rates, top: int = 20) -> list[list[dict]]:
    """SWAG Figure 7: per group, the `top` labels with the largest |rate - mean rate of the other
    groups|, largest first (ties: lower label index first). Each: label, rate, others, diff
    (rate - others), relative (diff / others, None where others is 0). rates: [G, H]."""
    r = np.asarray(rates, dtype=np.float64)
    other = others_mean(r)
    diff = r - other
    out = []
    for g in range(r.shape[0]):
        order = np.argsort(-np.abs(diff[g]), kind="stable")[:top]
        out.append([{"label": int(h), "rate": float(r[g, h]), "others": float(other[g, h]), "diff": float(diff[g, h]),
                     "relative": float(diff[g, h] / other[g, h]) if other[g, h] > 0 else None} for h in order])
    return out


def type_hits(pred, conf, label_types, types: tuple[str, ...], threshold: float) -> np.ndarray:
    """[N, T] 1.0 where at least one of an image's predicted labels (pred [N, k], with confidences
    conf [N, k]) at confidence >= threshold has type t (SEER indicator 1). label_types[h] is the
    set of types of label h (a label may have none, or several)."""
    pred, conf = np.asarray(pred), np.asarray(conf, dtype=np.float64)
    out = np.zeros((len(pred), len(types)))
    for n in range(len(pred)):
        for h, c in zip(pred[n], conf[n]):
            if c >= threshold:
                for t in label_types[int(h)]:
                    out[n, types.index(t)] = 1.0
    return out


def l2_normalize(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"{int((norm == 0).sum())} embeddings are all zeros: no direction to compare")
    return x / norm


def neighbours(query, database, k: int, exclude_self: bool = False) -> np.ndarray:
    """[Q, k] database indices of each query's k nearest neighbours by cosine similarity of the
    L2-normalised embeddings, nearest first (ties: lower index first). exclude_self: query i is
    database item i (one set searched against itself) and is not its own neighbour."""
    q, d = l2_normalize(query), l2_normalize(database)
    sim = q @ d.T
    if exclude_self:
        if sim.shape[0] != sim.shape[1]:
            raise ValueError("exclude_self needs the query set to be the database")
        np.fill_diagonal(sim, -np.inf)
    room = d.shape[0] - (1 if exclude_self else 0)
    if k > room:
        raise ValueError(f"K={k} neighbours asked for, but the database has {room} candidates")
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def precision_at_k(nn, query_attr, db_attr, ks) -> np.ndarray:
    """[Q, len(ks)]: for each query and K, the share of its K nearest neighbours (nn [Q, >= max K],
    nearest first) whose attribute equals the query's (SEER indicator 3)."""
    same = np.asarray(db_attr)[np.asarray(nn)] == np.asarray(query_attr)[:, None]
    return np.stack([same[:, :k].mean(1) for k in ks], 1)
