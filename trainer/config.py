"""Config loading shared by the trainer's entry points: YAML file + `key=value` overrides.

Each entry point has one frozen dataclass; its resolved dict is saved next to the outputs and
inside every checkpoint.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import TypeVar

import yaml

C = TypeVar("C")


def load_config(cls: type[C], argv: list[str]) -> C:
    """`--config FILE` (optional) then `key=value` overrides (values parsed as YAML scalars)."""
    values: dict = {}
    rest = list(argv)
    if "--config" in rest:
        i = rest.index("--config")
        path = Path(rest[i + 1])
        if not path.is_file():
            raise ValueError(f"--config {path}: no such file")
        values.update(yaml.safe_load(path.read_text()) or {})
        del rest[i:i + 2]
    for item in rest:
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        values[k.strip()] = yaml.safe_load(v)
    return from_dict(cls, values)


def from_dict(cls: type[C], values: dict) -> C:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in values.items():
        t = hints[k]
        if typing.get_origin(t) is tuple and isinstance(v, list):
            v = tuple(v)
        elif t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kw[k] = v
    return cls(**kw)


def to_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
