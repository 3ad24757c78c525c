r"""Linear probe (SWAG section 4.1): frozen trunk, cached features, L2 multinomial logistic regression
with the regularisation chosen on a split of the training set; top-1 / top-5 on val.

    python -m transfer.linear_probe model=build/demo/pretrain/export data=build/demo/downstream \
        out=build/demo/transfer/linear_pretrained.json img_size=64
    python -m transfer.linear_probe model=random:regnety_002 data=... out=... img_size=64
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.cli import key, load_config
from transfer.logreg import DEFAULT_LAMS, mean_class_accuracy, select_and_fit, top_k
from transfer.protocol import ProtocolConfig, features, pct, write_result


@dataclass(frozen=True)
class LinearProbeConfig(ProtocolConfig):
    lams: tuple[float, ...] = key(DEFAULT_LAMS, "candidate L2 strengths (lam = 1 / (C n) in sklearn's terms)")
    holdout_frac: float = key(0.2, "share of each class of train used to choose lam")

    def __post_init__(self):
        super().__post_init__()
        if not self.lams or any(x < 0 for x in self.lams):
            raise ValueError(f"lams must be non-empty and >= 0, got {self.lams}")
        if not 0 < self.holdout_frac < 1:
            raise ValueError(f"holdout_frac must be in (0, 1), got {self.holdout_frac}")


def run(cfg: LinearProbeConfig) -> dict:
    model, f = features(cfg)
    (xtr, ytr), (xva, yva) = f["train"], f["val"]
    clf, search = select_and_fit(xtr, ytr, len(f["classes"]), cfg.lams, cfg.holdout_frac, cfg.seed)
    scores = clf.scores(xva)
    result = {"protocol": "linear_probe", "model": cfg.model, "arch": model.name, "model_key": model.key,
              "data": cfg.data, "img_size": cfg.img_size, "classes": list(f["classes"]), "train_images": len(ytr),
              "val_images": len(yva), "feature_dim": xtr.shape[1], "top1": top_k(scores, yva, 1),
              "top5": top_k(scores, yva, 5), "mean_class_top1": mean_class_accuracy(scores, yva),
              "majority_class_top1": yva.bincount().max().item() / len(yva), **search,
              "val_correct": (scores.argmax(1) == yva).int().tolist()}  # per val image, for bootstrap CIs
    md = (f"## Linear probe: {cfg.model}\n\n| data | classes | train | val | lam | top-1 | top-5 | mean per-class |\n"
          f"| --- | --- | --- | --- | --- | --- | --- | --- |\n| {cfg.data} | {len(f['classes'])} | {len(ytr)} | "
          f"{len(yva)} | {search['lam']:g} | {pct(result['top1'])} | {pct(result['top5'])} | "
          f"{pct(result['mean_class_top1'])} |")
    write_result(cfg, result, md)
    print(md)
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(load_config(LinearProbeConfig, argv, "transfer.linear_probe", __doc__))


if __name__ == "__main__":
    main()
