"""What a usable model folder is, and the error a model that cannot be had raises."""

from __future__ import annotations

from pathlib import Path


class ModelUnavailableError(RuntimeError):
    """The model cannot be found or prepared here; the message says what to do about it."""


def is_model_folder(path: Path) -> bool:
    """A folder a transformers/vLLM loader can open: it holds a `config.json`."""
    return (path / "config.json").is_file()
