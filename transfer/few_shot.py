r"""Few-shot linear probe (SWAG section 4.1): k images per class, mean and spread over seeds.

    python -m transfer.few_shot model=build/demo/pretrain/export data=build/demo/downstream \
        out=build/demo/transfer/few_shot_pretrained.json img_size=64 [ks=[1,5,10,25] seeds=5]

For each k and seed, min(k, n_c) training images of each class c are drawn (seeded); a class with
fewer than k training images contributes all of them, and the result records how many classes
were capped at each k. The classifier is the linear probe's (transfer/logreg.py): lam chosen on a
held-out share of the k-shot set when some class has 2+ images (with k = 1 there is none to
hold out: lam = default_lam). Evaluation is always on the full val split.
"""
from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.cli import key, load_config
from transfer.logreg import DEFAULT_LAMS, select_and_fit, top_k
from transfer.protocol import ProtocolConfig, features, pct, write_result


@dataclass(frozen=True)
class FewShotConfig(ProtocolConfig):
    ks: tuple[int, ...] = key((1, 5, 10, 25), "training images per class, one probe each")
    seeds: int = key(5, "draws per k: seeds 0..seeds-1")
    lams: tuple[float, ...] = key(DEFAULT_LAMS, "candidate L2 strengths")
    holdout_frac: float = key(0.2, "share of each class of the k-shot set used to choose lam")
    default_lam: float = key(1e-3, "lam when nothing can be held out (k = 1)")

    def __post_init__(self):
        super().__post_init__()
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")


def draw(y: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, int]:
    """(indices of min(k, n_c) images per class, number of classes with fewer than k images)."""
    rng = np.random.default_rng([seed, k])
    yy = y.numpy()
    picked, capped = [], 0
    for c in np.unique(yy):
        idx = np.flatnonzero(yy == c)
        capped += len(idx) < k
        picked.extend(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    return torch.tensor(sorted(picked), dtype=torch.long), capped


def run(cfg: FewShotConfig) -> dict:
    model, f = features(cfg)
    (xtr, ytr), (xva, yva) = f["train"], f["val"]
    n_classes = len(f["classes"])
    per_k = {}
    for k in cfg.ks:
        accs, lams, correct = [], [], torch.zeros(len(yva))
        for seed in range(cfg.seeds):
            idx, capped = draw(ytr, k, seed)
            clf, search = select_and_fit(xtr[idx], ytr[idx], n_classes, cfg.lams, cfg.holdout_frac, seed,
                                         cfg.default_lam)
            scores = clf.scores(xva)
            accs.append(top_k(scores, yva, 1))
            correct += (scores.argmax(1) == yva).float()
            lams.append(search["lam"])
        per_k[str(k)] = {"mean_top1": statistics.fmean(accs), "std_top1": statistics.pstdev(accs),
                         "min_top1": min(accs), "max_top1": max(accs), "top1": accs, "lams": lams,
                         "classes_capped": capped, "train_images": len(idx),
                         "val_correct": (correct / cfg.seeds).tolist()}  # per val image: share of draws right
        print(f"k={k}: top-1 {pct(per_k[str(k)]['mean_top1'])} +- {pct(per_k[str(k)]['std_top1'])} "
              f"over {cfg.seeds} seeds ({capped} of {n_classes} classes have fewer than {k} train images)")
    result = {"protocol": "few_shot", "model": cfg.model, "arch": model.name, "model_key": model.key, "data": cfg.data,
              "img_size": cfg.img_size, "classes": list(f["classes"]), "val_images": len(yva), "k": per_k}
    md = (f"## Few-shot linear probe: {cfg.model}\n\n| k | top-1 mean | std | min | max | classes with < k |\n"
          "| --- | --- | --- | --- | --- | --- |\n" +
          "\n".join(f"| {k} | {pct(r['mean_top1'])} | {pct(r['std_top1'])} | {pct(r['min_top1'])} | "
                    f"{pct(r['max_top1'])} | {r['classes_capped']} of {n_classes} |" for k, r in per_k.items()))
    write_result(cfg, result, md)
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(load_config(FewShotConfig, argv, "transfer.few_shot", __doc__))


if __name__ == "__main__":
    main()
