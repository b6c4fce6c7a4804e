"""Files written whole or not at all: a reader (or a restart after `kill -9`) sees the old content
or the new, never half of it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomically(path: Path, text: str, *, durable: bool = False) -> None:
    """Replace `path` with `text` through a temporary file beside it and a rename; `durable`
    also syncs the data to disk before the rename (state that must survive a power cut)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as sink:
        sink.write(text)
        if durable:
            sink.flush()
            os.fsync(sink.fileno())
    os.replace(partial, path)


def write_json_atomically(
    path: Path, value: Any, *, indent: int = 2, durable: bool = False
) -> None:
    """`value` as indented JSON (keys in insertion order), written atomically."""
    write_text_atomically(path, json.dumps(value, indent=indent) + "\n", durable=durable)
