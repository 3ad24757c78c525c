"""Values a 2-rank script and the one-process reference in its test both build, so that both sides
compute on the same tensors (the rank scripts import this module by its dotted path)."""
import torch


def tower(pooling="mean", seed=0, context=8, vocab=50):
    """A small LiT text tower, seeded."""
    from trainer.lit.text_tower import TextTower, TextTowerSpec

    torch.manual_seed(seed)
    return TextTower(TextTowerSpec(vocab, context, 32, 2, 4, 2.0, 12, pooling))


def batch():
    """A global batch of 6 pairs: unit image rows [6, 12], token rows [6, 8]."""
    from trainer.lit.tokenizer import EOS_ID, PAD_ID

    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.normalize(torch.randn(6, 12, generator=g), dim=1)
    tokens = torch.randint(3, 50, (6, 8), generator=g)
    tokens[:, 5] = EOS_ID
    tokens[:, 6:] = PAD_ID
    return images, tokens


def unit_scores(b: int, k: int, seed: int) -> torch.Tensor:
    """SwAV's scores of b samples against k prototypes: cosines of seeded unit vectors."""
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(b, 16, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, 16, generator=g), dim=1)
    return z @ c.t()  # cosine similarities, as SwAV's scores
