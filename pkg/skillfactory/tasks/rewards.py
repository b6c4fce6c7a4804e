"""GRPO reward terms (`grpo.rewards`): built-ins and import-path plugins, weighted and summed.

Built-ins: `correctness` (the task's grader: 1 right, 0 not — the default, alone), `format`
(1 when the response's `<answer>` tags are present, balanced, not nested and the last one is not
empty) and `length` (1 − completion tokens / `grpo.max_response_length`, clipped to [0, 1]).
A plugin is `package.module:function`, called as `function(problem, response, tokens=...)` and
returning a number; it is code execution, so it runs only where the operator allowed it (embedded
runs; the reward service with `--allow-reward-plugins`), in a worker process of a
`BoundedRunner` within a per-call time budget (one call per group and plugin). A plugin that
raises, returns something other than a finite number, times out or is not allowed scores 0 for
that term and is reported in `Scored.failed`.

The terms travel with the problem (`REWARDS_KEY` and `MAX_TOKENS_KEY` in its data, set by the GRPO
stage when the spec's terms are not the default), so the reward service and the rollout workers
score by them without the run spec. No key means correctness alone, today's reward.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from skillfactory.parsing import extract_answer
from skillfactory.tasks import task_of
from skillfactory.tasks.base import Grade, Problem, ProblemFieldError, grade
from skillfactory.tasks.bounded_check import BoundedRunner, CheckFailed, CheckStopped

log = logging.getLogger(__name__)

REWARDS_KEY = "_rewards"
"""Problem data key: the reward terms, a list of `{"name", "weight"}`."""
MAX_TOKENS_KEY = "_max_response_tokens"
"""Problem data key: the completion token budget the `length` term scales by."""
DEFAULT_TERMS: tuple[tuple[str, float], ...] = (("correctness", 1.0),)
PLUGIN_TIMEOUT_SECONDS = 10.0
"""Time budget of one plugin call (a whole group's responses)."""
BUILTIN_NAMES = ("correctness", "format", "length")

_TAG = re.compile(r"</?answer>", re.IGNORECASE)
_PLUGIN_RUNNER = BoundedRunner("reward-plugins", timeout_s=PLUGIN_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class Scored:
    """The reward of one response: the weighted sum, each term's value, and the grade."""

    value: float
    correct: bool
    answer: str | None
    terms: dict[str, float] = field(default_factory=dict)
    failed: tuple[str, ...] = ()
    """Terms that raised, timed out or were not allowed (each counted 0)."""
    error: ProblemFieldError | None = None
    """Set when the problem lacks a field its grader needs for this response (value 0)."""


def format_reward(response: str) -> float:
    """1.0 when `<answer>` tags are present, balanced and not nested, and the last is not empty."""
    depth, seen = 0, False
    for tag in _TAG.findall(response):
        closing = tag.startswith("</")
        if closing == (depth == 0):  # a close without an open, or an open inside an open
            return 0.0
        depth += -1 if closing else 1
        seen = True
    answer = extract_answer(response)
    return 1.0 if seen and depth == 0 and answer is not None and answer.strip() else 0.0


def length_reward(tokens: int, max_tokens: int | None) -> float:
    """1 − tokens / max_tokens, clipped to [0, 1] (1.0 without a budget)."""
    if not max_tokens or max_tokens <= 0:
        return 1.0
    return max(0.0, 1.0 - tokens / max_tokens)


def reward_terms(problem: Problem) -> list[tuple[str, float]]:
    """The terms a problem is scored by (its data's `REWARDS_KEY`, else correctness alone)."""
    raw = problem.data.get(REWARDS_KEY)
    if not isinstance(raw, list) or not raw:
        return list(DEFAULT_TERMS)
    terms = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            weight = item.get("weight", 1.0)
            terms.append((item["name"], float(weight) if isinstance(weight, int | float) else 0.0))
    return terms or list(DEFAULT_TERMS)


def with_terms(
    problem: Problem, terms: Sequence[tuple[str, float]], max_tokens: int | None
) -> Problem:
    """The problem carrying its reward terms (unchanged when they are the default)."""
    if tuple(terms) == DEFAULT_TERMS:
        return problem
    data = dict(problem.data)
    data[REWARDS_KEY] = [{"name": name, "weight": weight} for name, weight in terms]
    if max_tokens is not None:
        data[MAX_TOKENS_KEY] = max_tokens
    return Problem(problem.id, problem.task, problem.question, problem.answer, data)


@cache
def load_plugin(path: str) -> Callable[..., Any]:
    """The function an import path `package.module:function` names."""
    module, _, name = path.partition(":")
    function = getattr(importlib.import_module(module), name)
    if not callable(function):
        raise TypeError(f"{path} is not callable")
    return function


def run_plugin(
    path: str, problem: Problem, responses: list[str], tokens: list[int]
) -> list[float | str]:
    """A plugin over a group's responses (in a worker): each value, or the error's text."""
    function = load_plugin(path)
    values: list[float | str] = []
    for response, count in zip(responses, tokens, strict=True):
        try:
            value = function(problem, response, tokens=count)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"returned {type(value).__name__}, not a number")
            if not math.isfinite(value):
                raise ValueError("returned a non-finite number")
            values.append(float(value))
        except Exception as error:  # a plugin's own bug costs its term, not the batch
            values.append(f"{type(error).__name__}: {error}"[:300])
    return values


def _plugin_values(
    path: str, problem: Problem, responses: list[str], tokens: list[int], allowed: bool
) -> list[float | None]:
    """Each response's value of a plugin term, None where it failed (logged)."""
    if not allowed:
        log.warning("reward plugin not allowed here: scored 0", extra={"reward": path})
        return [None] * len(responses)
    try:
        answers = _PLUGIN_RUNNER.call(run_plugin, path, problem, responses, tokens)
    except (CheckStopped, CheckFailed) as error:
        log.warning("reward plugin failed", extra={"reward": path, "error": str(error)})
        return [None] * len(responses)
    values: list[float | None] = []
    for answer in answers:
        if isinstance(answer, str):
            log.warning("reward plugin raised", extra={"reward": path, "error": answer})
            values.append(None)
        else:
            values.append(answer)
    return values


def score_group(
    problem: Problem,
    responses: Sequence[str],
    tokens: Sequence[int] | None = None,
    *,
    allow_plugins: bool = False,
) -> list[Scored]:
    """The reward of every response to `problem` by the problem's terms. A problem that cannot
    be graded (unknown task) raises; a response whose check needs a field the problem lacks gets
    `error` set."""
    responses = list(responses)
    counts = list(tokens) if tokens is not None else [max(1, len(r) // 4) for r in responses]
    task = task_of(problem)
    grades: list[Grade | ProblemFieldError] = []
    for response in responses:
        try:
            grades.append(grade(task, problem, response))
        except ProblemFieldError as error:  # only the responses whose check needs the field
            grades.append(error)
    terms = reward_terms(problem)
    max_tokens = problem.data.get(MAX_TOKENS_KEY)
    columns: dict[str, list[float | None]] = {}
    for name, _ in terms:
        if name in columns:
            continue
        if name == "correctness":
            columns[name] = [1.0 if isinstance(g, Grade) and g.correct else 0.0 for g in grades]
        elif name == "format":
            columns[name] = [format_reward(r) for r in responses]
        elif name == "length":
            budget = int(max_tokens) if isinstance(max_tokens, int | float) else None
            columns[name] = [length_reward(c, budget) for c in counts]
        else:
            columns[name] = _plugin_values(name, problem, responses, counts, allow_plugins)
    scored = []
    for i, result in enumerate(grades):
        if isinstance(result, ProblemFieldError):
            scored.append(Scored(0.0, False, None, error=result))
            continue
        values = {name: columns[name][i] for name, _ in terms}
        failed = tuple(name for name, value in values.items() if value is None)
        clean = {name: (value if value is not None else 0.0) for name, value in values.items()}
        total = sum(weight * clean[name] for name, weight in terms)
        scored.append(Scored(total, result.correct, result.answer, clean, failed))
    return scored
