"""WordNet 3.0 access and the SWAG hashtag -> synset lookup (SWAG appendix A, Listing 1).

WordNet is always passed in (`wn`), never reached through a global, so tests can hand in
the real corpus or a tiny one. `load_wordnet` reads an NLTK-layout directory built by
`make setup` from Debian's wordnet-base / wordnet-sense-index packages, which also runs

    python -m pipeline.wordnet zip_from=DIR zip_to=CACHE/wordnet.zip   # for the Spark executors
    python -m pipeline.wordnet check=DIR                               # WordNet 3.0's noun count
"""
from __future__ import annotations

import functools
import os
import sys
import warnings
import zipfile
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable

from pipeline.atomic import atomic_path
from pipeline.cli import ConfigError, key, load_config

# SWAG keeps synsets from these lexicographer files only.
DEFAULT_LEXNAMES: tuple[str, ...] = (
    "noun.animal", "noun.artifact", "noun.food", "noun.object", "noun.plant", "noun.event",
)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORDNET_ENV = "HASHTAG_WORDNET_DIR"
_REQUIRED_FILES = ("data.noun", "index.noun", "noun.exc", "lexnames", "index.sense")


def default_wordnet_dir() -> Path:
    """$HASHTAG_WORDNET_DIR, else the directory `make setup` builds inside the project."""
    env = os.environ.get(WORDNET_ENV)
    if env:
        return Path(env)
    return PROJECT_ROOT / "build" / "cache" / "nltk_data" / "corpora" / "wordnet"


def load_wordnet(root: str | os.PathLike | None = None):
    """An NLTK WordNetCorpusReader over `root` (default: `default_wordnet_dir()`).

    Loading takes seconds, so readers are cached per directory; a clear error names the
    directory when the files are not there.
    """
    return _load_wordnet(str(Path(root) if root is not None else default_wordnet_dir()))


@functools.lru_cache(maxsize=4)
def _load_wordnet(root_str: str):
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = Path(root_str)
    missing = [f for f in _REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet directory {root} lacks {', '.join(missing)}: run `make setup` "
            f"(or point ${WORDNET_ENV} at an NLTK wordnet corpus directory)"
        )
    class WordNet30Reader(WordNetCorpusReader):
        # NLTK maps "other" WordNet versions onto 3.0 by loading its own downloaded copy;
        # these files are 3.0 themselves (checked below), so there is nothing to map.
        def map_wn(self, version="wordnet"):
            return None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")
        wn = WordNet30Reader(str(root), None)
    if wn.get_version() != "3.0":
        raise ValueError(f"{root} holds WordNet {wn.get_version()}, expected 3.0")
    return wn


def get_synsets(hashtag: str, wn, lexnames: Iterable[str] = DEFAULT_LEXNAMES) -> tuple[str, ...]:
    """Sorted names of the WordNet synsets a normalized hashtag denotes (SWAG Listing 1).

    Candidates are morphy(h, NOUN) and morphy of every split h[:i] + "_" + h[i:] with both
    parts at least 3 characters long, which turns `brownbear` into `brown_bear`.
    """
    h = hashtag
    if len(h) < 3:
        return ()
    keep = set(lexnames)
    candidates = {wn.morphy(h, "n")}
    for i in range(3, len(h) - 2):
        candidates.add(wn.morphy(h[:i] + "_" + h[i:]))
    names = set()
    for c in candidates:
        if c is None:
            continue
        for s in wn.synsets(c):
            if s.lexname() in keep:
                names.add(s.name())
    return tuple(sorted(names))


def synset_key(synsets: Iterable[str]) -> str:
    """The canonical hashtag's key: its sorted synset names joined with '+'."""
    return "+".join(sorted(synsets))


def resolve_synsets(entries: Iterable[str], wn) -> set[str]:
    """Synset names from a list of names (`dog.n.01`) or WordNet offsets (`n02084071`).

    Unknown entries raise ValueError naming them; blank lines and `#` comments are skipped.
    """
    out, bad = set(), []
    for raw in entries:
        e = raw.split("#", 1)[0].strip()
        if not e:
            continue
        try:
            if e[0] in "nvasr" and e[1:].isdigit():
                out.add(wn.synset_from_pos_and_offset(e[0], int(e[1:])).name())
            else:
                out.add(wn.synset(e).name())
        except Exception:  # nltk raises WordNetError / ValueError / KeyError for unknown ids
            bad.append(e)
    if bad:
        raise ValueError(f"unknown WordNet synsets: {', '.join(bad[:10])}" + (" ..." if len(bad) > 10 else ""))
    return out


def zip_wordnet(src: Path, dst: Path) -> None:
    """Zip the corpus files (flat) so jobs can ship them to executors as a Spark archive."""
    with atomic_path(dst) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(src.iterdir()):
            if f.is_file():
                z.write(f, f.name)


@dataclass(frozen=True)
class SetupConfig:
    zip_from: str | None = key(None, "corpus directory to zip (flat) for the Spark jobs' executors")
    zip_to: str | None = key(None, "the zip written from zip_from (atomically)")
    check: str | None = key(None, "corpus directory to check: WordNet 3.0 has 82115 noun synsets")

    def __post_init__(self):
        if (self.zip_from is None) != (self.zip_to is None):
            raise ConfigError(f"zip_from and zip_to go together; got {self.zip_from}, {self.zip_to}")


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(SetupConfig, argv, "pipeline.wordnet", "WordNet corpus helpers used by `make setup`")
    if cfg.zip_from:
        zip_wordnet(Path(cfg.zip_from), Path(cfg.zip_to))
    if cfg.check:
        wn = load_wordnet(cfg.check)
        n = sum(1 for _ in wn.all_synsets("n"))
        if n != 82115:
            print(f"WordNet in {cfg.check} has {n} noun synsets, expected 82115 (3.0)", file=sys.stderr)
            return 1
        print(f"[setup] WordNet 3.0 ok: {n} noun synsets in {cfg.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
