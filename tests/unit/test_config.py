from dataclasses import dataclass, field

import pytest

from jobs.lib.config import parse_config


@dataclass(frozen=True)
class Cfg:
    manifest: str
    min_count: int = 2
    max_labels: int | None = None
    names: tuple[str, ...] = ("a", "b")
    flag: bool = False
    ratio: float = field(default=0.5, metadata={"help": "a share"})

    def __post_init__(self):
        if not 0 <= self.ratio <= 1:
            raise ValueError(f"--ratio must be in [0, 1], got {self.ratio}")


def test_flags_types_and_defaults():
    c = parse_config(Cfg, ["--manifest", "m.parquet", "--max-labels", "7", "--names", "x, y", "--flag"], "t")
    assert c == Cfg("m.parquet", 2, 7, ("x", "y"), True, 0.5)
    assert parse_config(Cfg, ["--manifest", "m"], "t").max_labels is None


def test_missing_required_and_validation_exit_with_message(capsys):
    with pytest.raises(SystemExit):
        parse_config(Cfg, [], "t")
    assert "--manifest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--manifest", "m", "--ratio", "2"], "t")
    assert "--ratio must be in [0, 1], got 2.0" in capsys.readouterr().err
