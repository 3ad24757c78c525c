r"""Zero-shot transfer, no training on the downstream task, by one of two methods:

method=wordnet (the default; SWAG appendix): the hashtag classifier's probabilities are mapped
onto the downstream classes through WordNet (pipeline/zero_shot_map.py).

    python -m transfer.zero_shot model=build/demo/pretrain/export data=build/demo/downstream \
        out=build/demo/transfer/zero_shot.json img_size=64 \
        class_synsets=pipeline/data/openclipart_class_synsets.yaml [aggregation=average|split_max]
    # ImageNet-style sets: folders named by wnid need nothing; integer classes take wnids=imagenet

method=lit (MAWS): classes by name through a LiT text tower (trainer.lit; transfer/zero_shot_lit.py),
prompt templates averaged; class names are the folder names or a YAML override.

    python -m transfer.zero_shot method=lit model=build/demo/lit/run/export data=build/demo/downstream \
        out=build/demo/lit/lit.json img_size=64 [class_names=names.yaml] [templates='["a photo of a {}."]']

Both write top-1, top-5, mean per-class top-1 and, per val image, val_correct and
val_top5_correct (for bootstrap CIs). split=train scores the train split instead: a dev set on
which to choose a method's settings (templates, names, a LiT config) without looking at val.

Hashtag synsets come from the vocabulary the model was trained on (`vocab=`, default the export's
config), whose label names must equal the export's. The class -> hashtag mapping is written next
to the result (`<out>.mapping.tsv`) for a person to audit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.atomic import write_text_atomic
from pipeline.zero_shot_map import (AGGREGATIONS, aggregate, class_synsets, map_classes, mapping_table,
                                    read_overrides, read_wnids)
from pipeline.cli import key, load_config
from transfer.logreg import mean_class_accuracy, top_k
from transfer.protocol import ProtocolConfig, features, pct, write_result
from transfer.zero_shot_lit import DEFAULT_TEMPLATES, lit_scores

TIMM_WNID_LISTS = {"imagenet": "imagenet_synsets.txt", "imagenet22k": "imagenet22k_synsets.txt"}


@dataclass(frozen=True)
class ZeroShotConfig(ProtocolConfig):
    method: str = key("wordnet", "wordnet (SWAG: hashtags through WordNet) | lit (a LiT export's text tower)")
    vocab: str | None = key(None, "vocab dir of the pretraining labels; null: the export's")
    aggregation: str = key("average", "average (SWAG RegNetY) | split_max (SWAG ViT)")
    class_synsets: str | None = key(None, "YAML overrides: class name -> [synset, ...]")
    wnids: str | None = key(None, "class i -> line i of a wnid list file, or imagenet / imagenet22k (timm's)")
    class_names: str | None = key(None, "lit: YAML overrides, class -> name or [name, ...]; else the folder names")
    templates: tuple[str, ...] = key(DEFAULT_TEMPLATES, "lit: prompt templates, each with one {} for the name")
    split: str = key("val", "the split scored: val (the result), or train (a dev set to choose settings on: "
                            "zero-shot never trains on it)")

    def __post_init__(self):
        super().__post_init__()
        if self.split not in ("train", "val"):
            raise ValueError(f"split must be train or val, got {self.split!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; valid: {', '.join(AGGREGATIONS)}")


def wnid_list(spec: str) -> list[str]:
    if spec in TIMM_WNID_LISTS:
        import timm.data

        return read_wnids(Path(timm.data.__file__).parent / "_info" / TIMM_WNID_LISTS[spec])
    return read_wnids(spec)


def hashtag_table(cfg: ZeroShotConfig, meta: dict) -> tuple[list[str], list[list[str]]]:
    import pyarrow.parquet as pq

    vocab = cfg.vocab or meta.get("config", {}).get("vocab")
    if not vocab:
        raise ValueError(f"{cfg.model}: the export names no vocabulary; pass vocab=<vocab dir>")
    rows = sorted(pq.read_table(Path(vocab) / "vocab.parquet", columns=["label", "name", "synsets"]).to_pylist(),
                  key=lambda r: r["label"])
    names = [r["name"] for r in rows]
    if names != list(meta.get("labels") or []):
        raise ValueError(f"vocabulary {vocab} ({len(names)} labels) is not the one {cfg.model} was trained on "
                         f"({len(meta.get('labels') or [])} labels in the export)")
    return names, [list(r["synsets"]) for r in rows]


def per_image(scores: torch.Tensor, y: torch.Tensor) -> dict:
    k = min(5, scores.shape[1])
    return {"val_correct": (scores.argmax(1) == y).int().tolist(),
            "val_top5_correct": (scores.topk(k, dim=1).indices == y.view(-1, 1)).any(1).int().tolist()}


def run(cfg: ZeroShotConfig) -> dict:
    return METHODS[cfg.method](cfg)


def run_lit(cfg: ZeroShotConfig) -> dict:
    scores, yva, classes, names, meta = lit_scores(cfg, features)
    result = {"protocol": "zero_shot", "method": "lit", "split": cfg.split, "model": cfg.model,
              "image_tower": meta.get("config", {}).get("image_tower"),
              "data": cfg.data, "img_size": cfg.img_size, "classes": classes, "class_names": names,
              "templates": list(cfg.templates), "val_images": len(yva), "top1": top_k(scores, yva, 1),
              "top5": top_k(scores, yva, 5), "mean_class_top1": mean_class_accuracy(scores, yva),
              **per_image(scores, yva)}
    md = (f"## Zero-shot (LiT): {cfg.model}\n\ntop-1 {pct(result['top1'])}, top-5 {pct(result['top5'])}, mean "
          f"per-class {pct(result['mean_class_top1'])} on {len(yva)} {cfg.split} images of {len(classes)} classes, "
          f"{len(cfg.templates)} prompt templates\n\n| class | names |\n| --- | --- |\n" +
          "\n".join(f"| {c} | {', '.join(n)} |" for c, n in names.items()))
    write_result(cfg, result, md)
    print(md)
    return result


def run_wordnet(cfg: ZeroShotConfig) -> dict:
    from pipeline.wordnet import load_wordnet
    from trainer.export import read_export_meta

    from trainer.lit.export import is_lit_export

    if is_lit_export(cfg.model):
        raise ValueError(f"model={cfg.model} is a LiT export: pass method=lit (method=wordnet needs the hashtag "
                         "model's export)")
    if cfg.model.startswith("random:"):
        raise ValueError(f"model={cfg.model}: zero-shot needs an exported hashtag model (its head), not random init")
    if read_export_meta(cfg.model).get("head") == "swav":
        raise ValueError(f"model={cfg.model}: a SwAV export's head scores prototypes, not hashtags; zero-shot "
                         "through WordNet needs a hashtag-pretrained export (trainer.pretrain)")
    model, f = features(cfg)
    names, tag_synsets = hashtag_table(cfg, model.meta)
    classes = list(f["classes"])
    wn = load_wordnet()
    if cfg.wnids:
        ids = wnid_list(cfg.wnids)
        if len(ids) < len(classes):
            raise ValueError(f"wnids={cfg.wnids} lists {len(ids)} ids for {len(classes)} classes")
        syn = class_synsets(ids[:len(classes)], wn)
    else:
        syn = class_synsets(classes, wn, read_overrides(cfg.class_synsets) if cfg.class_synsets else None)
    mapping = map_classes(classes, syn, tag_synsets, wn)
    out = Path(cfg.out)
    tsv = out.with_name(out.stem + ".mapping.tsv")
    write_text_atomic(tsv, mapping_table(mapping, names, tag_synsets))
    xva, yva = f[cfg.split]
    with torch.no_grad():
        logits = model.head.eval()(xva.float())
    loss = model.meta.get("config", {}).get("loss", "softmax")
    probs = (torch.sigmoid(logits) if loss == "bce" else torch.softmax(logits, 1)).double().numpy()
    scores = torch.from_numpy(aggregate(probs, mapping, cfg.aggregation))
    unmapped = [m.name for m in mapping if not m.hashtags]
    result = {"protocol": "zero_shot", "method": "wordnet", "split": cfg.split, "model": cfg.model, "arch": model.name,
              "model_key": model.key,
              "data": cfg.data, "img_size": cfg.img_size, "aggregation": cfg.aggregation, "classes": classes,
              "val_images": len(yva), "top1": top_k(scores, yva, 1), "top5": top_k(scores, yva, 5),
              "mean_class_top1": mean_class_accuracy(scores, yva), **per_image(scores, yva),
              "unmapped_classes": unmapped,
              "mapping_file": str(tsv),
              "mapping": {m.name: {"synsets": list(m.synsets), "source": m.source, "similarity": m.similarity,
                                   "hashtags": [names[i] for i in m.hashtags]} for m in mapping}}
    md = (f"## Zero-shot: {cfg.model} ({cfg.aggregation})\n\ntop-1 {pct(result['top1'])}, top-5 "
          f"{pct(result['top5'])}, mean per-class {pct(result['mean_class_top1'])} on {len(yva)} {cfg.split} images of "
          f"{len(classes)} classes; mapping in {tsv}\n\n| class | synsets | similarity | hashtags |\n"
          "| --- | --- | --- | --- |\n" +
          "\n".join(f"| {m.name} | {', '.join(m.synsets)} | {m.similarity:.3f} | "
                    f"{', '.join(names[i] for i in m.hashtags)} |" for m in mapping))
    write_result(cfg, result, md)
    print(md)
    return result


METHODS = {"wordnet": run_wordnet, "lit": run_lit}


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(load_config(ZeroShotConfig, argv, "transfer.zero_shot", __doc__))


if __name__ == "__main__":
    main()
