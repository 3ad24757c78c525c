"""The text tower's tokenizer: byte-level BPE (Hugging Face `tokenizers`), trained offline on the
pretraining texts and saved as its own JSON (no pickle, nothing downloaded).

Text is NFKC-normalised and lower-cased; byte-level pre-tokenization means no input is ever
out of vocabulary. `encode` gives fixed-length rows for the tower: at most context_length - 1
tokens, then <eos>, then <pad> (id 0) to context_length. The tower pools the real tokens (mean)
or reads the <eos> position (last), so a row is never all padding.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIALS = (PAD, UNK, EOS)
PAD_ID, EOS_ID = 0, 2
MIN_VOCAB = 256 + len(SPECIALS)  # the byte alphabet and the special tokens


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of `vocab_size` tokens (fewer when the texts hold fewer merges) learnt
    from `texts`; ids 0, 1, 2 are <pad>, <unk>, <eos>."""
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB} (256 bytes + {len(SPECIALS)} special tokens), "
                         f"got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    if [tok.token_to_id(s) for s in SPECIALS] != [0, 1, 2]:
        raise AssertionError(f"special tokens got ids {[tok.token_to_id(s) for s in SPECIALS]}, expected 0, 1, 2")
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """tokenizer.json (the library's own format), written to a temporary name and renamed."""
    from pipeline.atomic import write_text_atomic

    write_text_atomic(Path(path), tok.to_str(pretty=False))


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    try:
        tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, Exception) as e:  # the library raises its own Exception type
        raise ValueError(f"{path}: not a tokenizers JSON file: {e}") from None
    if [tok.token_to_id(s) for s in SPECIALS] != [PAD_ID, 1, EOS_ID]:
        raise ValueError(f"{path}: not a tokenizer of trainer.lit (special tokens {SPECIALS} are not ids 0, 1, 2)")
    return tok


def tokenizer_sha256(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_str(pretty=False).encode("utf-8")).hexdigest()


def encode(tok: Tokenizer, texts: list[str], context_length: int) -> np.ndarray:
    """int32 [len(texts), context_length]: each text's tokens cut to context_length - 1, <eos>, <pad>s."""
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2, got {context_length}")
    out = np.full((len(texts), context_length), PAD_ID, dtype=np.int32)
    for i, enc in enumerate(tok.encode_batch(list(texts), add_special_tokens=False)):
        ids = enc.ids[:context_length - 1] + [EOS_ID]
        out[i, :len(ids)] = ids
    return out


def decode(tok: Tokenizer, row) -> str:
    """The text of one encoded row (special tokens dropped), as normalised: lower case."""
    ids = [int(i) for i in row if int(i) not in (PAD_ID, EOS_ID)]
    return tok.decode(ids, skip_special_tokens=True).strip()
