"""The key=value command line of every `python -m` / torchrun entry point: one frozen dataclass
per entry point, loaded from `--config FILE.yaml` then `key=value` overrides (values parsed as
YAML). A field's one line of `--help` is its metadata (`key(default, help)`), as jobs/lib/config.py
reads it for the Spark jobs' `--flags`.

A bad command line (unknown or missing key, a value of the wrong type) is a usage message naming
the key and exit status 2; `--help` lists every key with its type, default and help, exit 0. A
value the dataclass refuses (its __post_init__) raises its ValueError. trainer/config.py holds the
trainers' shared keys; pipeline/ tools use this module directly (pipeline may not import trainer).
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import TypeVar

import yaml

C = TypeVar("C")


def key(default=dataclasses.MISSING, help: str = ""):
    """A config field with its line of `--help`; without a default the key is required."""
    return dataclasses.field(default=default, metadata={"help": help})


class ConfigError(ValueError):
    """The keys or values given do not fit the config class (a usage error on the command line)."""


def load_config(cls: type[C], argv: list[str] | None = None, prog: str | None = None, doc: str | None = None) -> C:
    """`--config FILE` (optional) then `key=value` overrides (values parsed as YAML scalars).

    argv None: sys.argv[1:]. `-h`/`--help` prints `doc` and the keys, then exits 0; a usage error
    (ConfigError) prints the usage and the error to stderr and exits 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or cls.__module__
    if "-h" in argv or "--help" in argv:
        print(help_text(cls, prog, doc))
        raise SystemExit(0)
    try:
        return from_dict(cls, parse_args(argv))
    except ConfigError as e:
        print(f"{usage(prog)}\n{prog}: error: {e}\n(--help lists the keys)", file=sys.stderr)
        raise SystemExit(2) from None


def parse_args(argv: list[str]) -> dict:
    values: dict = {}
    rest = list(argv)
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            raise ConfigError("--config needs a YAML file")
        path = Path(rest[i + 1])
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: expected a mapping of keys to values")
        values.update(loaded)
        del rest[i:i + 2]
    for item in rest:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        values[k.strip()] = yaml.safe_load(v)
    return values


def from_dict(cls: type[C], values: dict) -> C:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; valid: {sorted(fields)}")
    missing = [n for n in fields if n not in values and _required(fields[n])]
    if missing:
        raise ConfigError(f"missing required keys: {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, hints[k], v) for k, v in values.items()})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _coerce(key: str, t, v):
    """v as the field's declared scalar type: YAML reads `1e-3` as a string and `2` as an int
    where a float is declared; anything that is not the declared type is a clear error."""
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        t = next(a for a in args if a is not type(None))
    if typing.get_origin(t) is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list such as [1, 2], got {v!r}")
        return tuple(v)
    if t is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r}: expected a number, got {v!r}")
    if t is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"config key {key!r}: expected an integer, got {v!r}")
    if t is bool and not isinstance(v, bool):
        raise ConfigError(f"config key {key!r}: expected true or false, got {v!r}")
    if t is str:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return str(v)  # run_dir=2024 is a name, not a number
        if not isinstance(v, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {v!r}")
    return v


def to_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def usage(prog: str) -> str:
    return f"usage: python -m {prog} [--config FILE.yaml] [key=value ...]"


def _type_name(t) -> str:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(t))
    if typing.get_origin(t) is tuple:
        return f"list of {_type_name(typing.get_args(t)[0])}"
    return "null" if t is type(None) else getattr(t, "__name__", str(t))


def _shown(value) -> str:
    return yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True, width=10**6).strip() \
        .removesuffix("...").strip()


def help_text(cls, prog: str, doc: str | None = None) -> str:
    """The entry point's docstring and one line per key: name, type, default (or required), help;
    required keys first, then the entry point's own, then those it inherits."""
    hints = typing.get_type_hints(cls)
    own_first = [n for c in cls.__mro__ for n in c.__dict__.get("__annotations__", {})]
    fields = sorted(dataclasses.fields(cls), key=lambda f: (not _required(f), own_first.index(f.name)))
    rows = [(f.name, _type_name(hints[f.name]), "required" if _required(f) else _shown(f.default),
             f.metadata.get("help", "")) for f in fields]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [usage(prog), ""]
    if doc:
        lines += [doc.strip(), ""]
    lines.append("keys (key=value on the command line, values in YAML; --config FILE.yaml sets several):")
    lines += [f"  {n:<{widths[0]}}  {t:<{widths[1]}}  {d:<{widths[2]}}  {h}".rstrip() for n, t, d, h in rows]
    return "\n".join(lines)
