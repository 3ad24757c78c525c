r"""LiT (Zhai et al. 2022), as MAWS reports zero-shot: a text tower trained contrastively against
a locked image tower, here a trainer.pretrain export. Classes are then recognised by name
(`python -m transfer.zero_shot method=lit model=RUN_DIR/export ...`).

    torchrun --nproc_per_node=8 -m trainer.lit --config trainer/configs/lit_b12.yaml \
        shards=/data/shards image_tower=runs/vit_l16/export run_dir=runs/lit_l16 [key=value ...]
    python -m trainer.lit --config trainer/configs/lit_demo_cpu.yaml shards=build/demo/shards \
        image_tower=build/demo/pretrain/export run_dir=DIR

1. Pairs (trainer/lit/pairs.py): each rank embeds its share of the shards' images that carry a
   text with the locked tower's pooled features, once (cached in RUN_DIR/pairs; a resumed run
   embeds nothing again).
2. Tokenizer (trainer/lit/tokenizer.py): byte-level BPE of vocab_size learnt on the first
   tokenizer_texts pair texts, saved as RUN_DIR/tokenizer.json (reused on resume); the texts
   are tokenized once.
3. Training on trainer.loop (checkpoints, exact resume, SIGTERM, metrics): the text tower
   (trainer/lit/text_tower.py) embeds each rank's texts, the embeddings are all-gathered with
   their gradient, and every rank computes the symmetric InfoNCE of the global batch against its
   image embeddings with the learned temperature (trainer/lit/loss.py). AdamW, warm-up then
   half-cosine. Metrics add the temperature and the in-batch retrieval accuracies.
4. Export (trainer/lit/export.py): the image tower copied unchanged, the text tower, the tokenizer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.config import ShardTrainConfig, key, load_config, to_dict
from trainer.data.shard_set import load_shard_set
from trainer.distributed import DistInfo
from trainer.export import load_model
from trainer.lit.export import export_lit
from trainer.lit.loss import gather_rows, symmetric_infonce
from trainer.lit.pairs import PairLoader, barrier, embed_images, open_pairs, read_texts, tokenize_pairs
from trainer.lit.text_tower import TextTower, TextTowerSpec
from trainer.lit.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from trainer.loop import Task, TooManyBadSamples, finish, fit
from trainer.optim import build_optimizer, peak_lr
from trainer.prepare import Run, prepare, start
from trainer.recipes import check_recipe, describe

log = logging.getLogger("lit")
ALLOWED_RECIPES = ("lit", "adamw")


@dataclass(frozen=True, kw_only=True)
class LitConfig(ShardTrainConfig):
    image_tower: str = key(help="export directory of trainer.pretrain: the locked image tower")
    pairs_dir: str | None = key(None, "where the image embeddings and tokens are cached; null: RUN_DIR/pairs")
    vocab_size: int = key(8192, "tokenizer vocabulary (byte-level BPE)")
    tokenizer_texts: int = key(1_000_000, "pair texts the tokenizer learns from (the first, in shard order)")
    context_length: int = key(16, "text tokens per text, <eos> included (LiT: 16)")
    width: int = key(768, "text transformer width")
    depth: int = key(12, "text transformer blocks")
    heads: int = key(12, "attention heads")
    mlp_ratio: float = key(4.0, "MLP width / width")
    pooling: str = key("mean", "mean (over the real tokens) | last (the <eos> token)")
    temperature_init: float = key(10.0, "initial temperature t of the logits t * cos (big_vision: 10)")
    max_temperature: float = key(100.0, "cap on t (CLIP: 100)")
    recipe: str = key("lit", f"optimizer recipe (trainer/recipes.py): {describe(ALLOWED_RECIPES)}")
    weight_decay: float | None = key(None, "null: the recipe's (none on norms, biases, the temperature)")
    embed_batch: int = key(64, "images per forward pass of the locked tower when embedding")
    shuffle_window: int = key(1024, "pairs are shuffled within windows of this many shards, taken in a seeded "
                                    "order (a full shuffle below that many shards)")
    batch_size: int = key(4096, "global batch of pairs, split evenly over the processes")

    def __post_init__(self):
        super().__post_init__()
        if self.data_format != "wds" or self.sample_index is not None:
            raise ValueError("trainer.lit reads every stored image with a text from the WebDataset shards: "
                             "data_format must be wds and sample_index null")
        if self.tokenizer_texts < 1 or self.embed_batch < 1 or self.shuffle_window < 1:
            raise ValueError("tokenizer_texts, embed_batch and shuffle_window must be >= 1")
        if self.image_tower.startswith("random:"):
            raise ValueError(f"image_tower={self.image_tower}: LiT locks a trained tower; pass an export directory")
        check_recipe(self.recipe, ALLOWED_RECIPES, "trainer.lit")
        self.text_spec(1)  # validates the tower's sizes

    def text_spec(self, embed_dim: int, vocab_size: int | None = None) -> TextTowerSpec:
        return TextTowerSpec(vocab_size or self.vocab_size, self.context_length, self.width, self.depth, self.heads,
                             self.mlp_ratio, embed_dim, self.pooling, self.temperature_init, self.max_temperature)


def build_pairs(cfg: LitConfig, d: DistInfo, run_dir: Path):
    """(pair store, tokenizer, image tower): steps 1 and 2 of the module docstring, on every rank."""
    index = load_shard_set(cfg.shards)
    tower = load_model(cfg.image_tower)
    out = Path(cfg.pairs_dir) if cfg.pairs_dir else run_dir / "pairs"
    with torch.random.fork_rng(devices=[]):  # the DataLoader's draw must not move the training RNG
        embed_images(index, tower.trunk, tower.mean, tower.std, tower.key, cfg.img_size, out, d, cfg.workers,
                     cfg.embed_batch)
    barrier()
    tok_path = run_dir / "tokenizer.json"
    if d.is_main and not tok_path.is_file():
        save_tokenizer(train_tokenizer(read_texts(index, out, cfg.tokenizer_texts), cfg.vocab_size), tok_path)
    barrier()
    tok = load_tokenizer(tok_path)
    tokenize_pairs(index, tok, cfg.context_length, out, d)
    barrier()
    store = open_pairs(index, out)
    if len(store.stats["bad"]) > cfg.max_bad_samples:
        raise TooManyBadSamples(f"{len(store.stats['bad'])} stored images failed to decode, more than max_bad_samples="
                                f"{cfg.max_bad_samples}: {'; '.join(store.stats['bad'][:20])}")
    if d.is_main:
        s = store.stats
        log.info("%d image-text pairs from %d stored images (%d without text, %d undecodable, skipped); %d-d "
                 "embeddings", s["pairs"], s["images"], s["no_text"], len(s["bad"]), store.dim)
    return store, tok, tower


class LitTask(Task):
    def __init__(self, cfg: LitConfig, run: Run):
        self.cfg, self.run = cfg, run
        self.hits = torch.zeros(3, dtype=torch.float64)  # image->text, text->image correct, pairs

    def loss(self, batch, step):
        dev = self.run.d.device
        with self.run.autocast():
            texts, t = self.run.net(batch.tokens.to(dev).long())
        texts = gather_rows(texts.float())
        images = torch.nn.functional.normalize(batch.images.to(dev), dim=-1)
        with torch.no_grad():
            sim = images @ texts.t()
            target = torch.arange(sim.shape[0], device=dev)
            self.hits += torch.tensor([(sim.argmax(1) == target).sum().item(), (sim.argmax(0) == target).sum().item(),
                                       sim.shape[0]], dtype=torch.float64)
        return symmetric_infonce(images, texts, t.float())

    def log_metrics(self, step, loss):
        # every rank computed the same global batch: no all-reduce needed
        i2t, t2i, n = self.hits.tolist()
        self.hits.zero_()
        return {"temperature": float(self.run.model.temperature().detach()), "batch_i2t_top1": i2t / max(n, 1),
                "batch_t2i_top1": t2i / max(n, 1)}


def build(cfg: LitConfig, d: DistInfo, run_dir: Path):
    """(run, task, loader, peak lr, tokenizer) of a LiT run, prepared (resumed where run_dir has a checkpoint)."""
    store, tok, tower = build_pairs(cfg, d, run_dir)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    text = TextTower(cfg.text_spec(store.dim, tok.get_vocab_size()))
    peak = peak_lr(cfg.recipe, cfg.batch_size, cfg.base_lr)
    run = prepare(cfg, d, text, lambda m: build_optimizer(cfg.recipe, m, peak, cfg.weight_decay), run_dir,
                  tower.mean, tower.std)
    loader = PairLoader(store, cfg.batch_size, d.rank, d.world_size, cfg.seed, cfg.shuffle_window)
    return run, LitTask(cfg, run), loader, peak, tok, store


def train(cfg: LitConfig) -> dict:
    d = start(cfg)
    run_dir = Path(cfg.run_dir)
    run, task, loader, peak, tok, store = build(cfg, d, run_dir)
    result = fit(cfg, run, task, loader, cfg.steps, peak)
    result["pairs"] = {k: (len(v) if k == "bad" else v) for k, v in store.stats.items()}
    return finish(run, result, lambda: export_lit(run_dir / "export", Path(cfg.image_tower), run.model, tok, {
        "img_size": cfg.img_size, "pairs": len(store), "config": to_dict(cfg)}))


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return train(load_config(LitConfig, argv, "trainer.lit", __doc__))


if __name__ == "__main__":
    main()
