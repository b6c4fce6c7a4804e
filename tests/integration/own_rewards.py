"""Reward plugins of the own-data tests, named in run specs as `own_rewards:<function>`.

Kept apart from the test modules: a plugin's module is imported in a reward worker process,
whose address space is capped, so it must stay light (no torch).
"""

from __future__ import annotations

import time
from typing import Any


def brevity(problem: Any, response: str, **extra: Any) -> float:
    """Shorter responses score higher: 1 / (1 + tokens)."""
    return 1.0 / (1 + int(extra.get("tokens", len(response))))


def echo_gold(problem: Any, response: str, **extra: Any) -> float:
    """1 when the gold answer appears anywhere in the response."""
    return 1.0 if problem.answer in response else 0.0


def broken(problem: Any, response: str, **extra: Any) -> float:
    """Always raises."""
    raise RuntimeError("this plugin is broken")


def not_a_number(problem: Any, response: str, **extra: Any) -> Any:
    """Returns text."""
    return "high"


def slow(problem: Any, response: str, **extra: Any) -> float:
    """Runs past any test budget."""
    time.sleep(30)
    return 1.0
