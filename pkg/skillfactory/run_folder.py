"""The folder of a run: `<output_dir>/<run name>/`, under which every stage writes its own."""

from __future__ import annotations

from pathlib import Path

from skillfactory.runspec import RunSpec


def run_dir(spec: RunSpec) -> Path:
    """The folder of this run."""
    return Path(spec.output_dir) / spec.name
