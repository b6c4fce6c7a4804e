"""Seeds derived from the run's seed: every random choice of a run takes one, so a run is
reproducible and its parts do not share random streams."""

from __future__ import annotations

import hashlib

from skillfactory.runspec import RunSpec


def derived_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed from a base seed and labels (not Python's salted `hash`)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def data_stage_seed(spec: RunSpec) -> int:
    """The seed of stage 1: its own when set, else the run's."""
    return spec.data.seed if spec.data.seed is not None else spec.seed
