"""One frozen dataclass per job; its fields become `--flags` (field metadata gives the help)."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import TypeVar

C = TypeVar("C")


def parse_config(cls: type[C], argv: list[str] | None, description: str) -> C:
    """Build `cls` from command-line flags: `field_name` -> `--field-name`.

    Fields without a default are required; tuple fields take comma-separated values;
    bool fields are `--flag/--no-flag`. Validation lives in the dataclass' __post_init__,
    whose ValueError becomes an argparse error (exit 2 with the message).
    """
    hints = typing.get_type_hints(cls)
    p = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_ = f.metadata.get("help", "")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
            continue
        conv = _converter(kind)
        kw = dict(required=True) if required else dict(default=f.default)
        p.add_argument(flag, type=conv, help=help_, dest=f.name, **kw)
    args = vars(p.parse_args(argv))
    try:
        return cls(**args)
    except ValueError as e:
        p.error(str(e))


def _converter(kind):
    origin = typing.get_origin(kind)
    if origin is tuple:
        return lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        return _converter(inner)
    return kind
