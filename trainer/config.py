"""Config loading shared by the trainer's entry points: YAML file + `key=value` overrides.

Each entry point has one frozen dataclass; its resolved dict is saved next to the outputs and
inside every checkpoint.
"""
from __future__ import annotations

import dataclasses
import types
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
    return cls(**{k: _coerce(k, hints[k], v) for k, v in values.items()})


def _coerce(key: str, t, v):
    """v as the field's declared scalar type: YAML reads `1e-3` as a string and `2` as an int
    where a float is declared; anything that is not the declared type is a clear error."""
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        t = next(a for a in args if a is not type(None))
    if typing.get_origin(t) is tuple:
        return tuple(v) if isinstance(v, list) else v
    if t is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r}: expected a number, got {v!r}")
    if t is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ValueError(f"config key {key!r}: expected an integer, got {v!r}")
    if t is bool and not isinstance(v, bool):
        raise ValueError(f"config key {key!r}: expected true or false, got {v!r}")
    return v


def to_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
