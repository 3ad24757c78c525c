"""What the JSON metadata files of the toolkit share (shards.json: schemas/shard_set.py; a sample
index's index.json: schemas/sample_index.py): one error type, one version check, one layout.

A file without a "version" key is version 1 (files written before the key existed). A reader
meeting another version refuses it, naming the file, the version found and the one it reads.
"""
from __future__ import annotations

import json
from pathlib import Path


class MetadataError(ValueError):
    """A metadata file that is unreadable, of another version or inconsistent; names the file.
    The trainer's readers raise it as pipeline.wds.ShardError (schemas cannot import pipeline)."""


def parse_versioned(text: str, where: str, kind: str, version: int) -> dict:
    """The JSON object in `text` (read from `where`), refused unless of `version`."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise MetadataError(f"{where} is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise MetadataError(f"{where}: expected a JSON object, found {type(raw).__name__}")
    found = raw.get("version", 1)
    if type(found) is not int or found != version:
        raise MetadataError(f"{where}: {kind} version {found!r}; this code reads version {version} "
                            "(rewrite it with this code, or read it with the code that wrote it)")
    return raw


def read_text(path: Path) -> str:
    """A local metadata file's text; unreadable -> MetadataError naming it."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise MetadataError(f"{path} is unreadable: {e!r}") from e


def dump(obj: dict) -> str:
    """The one text layout of the metadata files: sorted keys, indented, a final newline."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
