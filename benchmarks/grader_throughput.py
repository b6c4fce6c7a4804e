"""Grader throughput: countdown-4 and gsm8k answers per second, ours next to a naive baseline.

Reproduce on one core:
    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/grader_throughput.py

The countdown baseline is the checker many RL recipes use: a character whitelist, a regex for the
numbers, then Python's `eval` on the model's text. It lives here only, as a yardstick; the library
never evaluates model output. The gsm8k baseline takes the last number matched by a simple regex
and compares floats. Both graders get the same extracted answers (the `<answer>` tag is already
stripped), so the numbers measure the check alone.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence

from skillfactory.tasks import Problem, get_task

Row = tuple[str, str, Callable[[Problem, str], bool], list[tuple[Problem, str]]]
"""(task, grader name, check, problem-answer pairs)."""

_WHITELIST = re.compile(r"^[\d+\-*/().\s]+$")
_INTS = re.compile(r"\d+")
_LAST_NUMBER = re.compile(r"-?\d+\.?\d*")


def naive_countdown_check(problem: Problem, answer: str) -> bool:
    """Baseline only — UNSAFE on untrusted text: whitelist, number multiset, then eval."""
    if not _WHITELIST.match(answer):
        return False
    used = Counter(int(n) for n in _INTS.findall(answer))
    if used - Counter(problem.data["numbers"]):
        return False
    try:
        value = eval(answer, {"__builtins__": None}, {})  # noqa: S307 - the baseline, by design
    except Exception:
        return False
    return abs(value - problem.data["target"]) < 1e-5


def naive_gsm8k_check(problem: Problem, answer: str) -> bool:
    """Baseline: the last regex number as a float equals the gold."""
    numbers = _LAST_NUMBER.findall(answer.replace(",", ""))
    return bool(numbers) and float(numbers[-1]) == float(problem.answer)


def countdown_answers(problems: Sequence[Problem], rng: random.Random) -> list[tuple[Problem, str]]:
    """Typical model answers: the reference plain, unspaced, with "= target", a wrong expression,
    and two step-format answers (right arithmetic, and a step using a number twice)."""
    pairs = []
    for problem in problems:
        reference, target = problem.answer, problem.data["target"]
        a, b, c = problem.data["numbers"][:3]
        answers = [
            reference,
            reference.replace(" ", ""),
            f"{reference} = {target}",
            f"({a} + {b}) * {c}",
            f"Step 1: {a} + {b} = {a + b}\nStep 2: {a + b} * {c} = {(a + b) * c}",
            f"Step 1: {a} + {b} = {a + b}\nStep 2: {a + b} - {a} = {b}",
        ]
        pairs += [(problem, answer) for answer in answers]
    rng.shuffle(pairs)
    return pairs


def gsm8k_answers(problems: Sequence[Problem], rng: random.Random) -> list[tuple[Problem, str]]:
    """Typical final answers: the number bare, with $, with units, in a sentence, wrong, "N.00"."""
    pairs = []
    for problem in problems:
        gold = problem.answer
        answers = [gold, f"${gold}", f"{gold} dollars", f"The answer is {gold}.", "7", f"{gold}.00"]
        pairs += [(problem, answer) for answer in answers]
    rng.shuffle(pairs)
    return pairs


def agreement(rows: list[Row]) -> str:
    """How often each grader says "correct", a sanity check that both graders do the same job."""
    shares = [sum(check(p, a) for p, a in pairs) / len(pairs) for _, _, check, pairs in rows]
    return ", ".join(
        f"{name}: {share:.0%} correct" for (_, name, _, _), share in zip(rows, shares, strict=True)
    )


def rate(
    check: Callable[[Problem, str], bool], pairs: list[tuple[Problem, str]], seconds: float
) -> float:
    """Checks per second over repeated passes through `pairs` for about `seconds`."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for problem, answer in pairs:
            check(problem, answer)
        done += len(pairs)
    return done / elapsed


def best_rates(rows: list[Row], seconds: float, rounds: int) -> list[float]:
    """The best rate of each row over `rounds` interleaved rounds (robust to a noisy machine)."""
    best = [0.0] * len(rows)
    for _ in range(rounds):
        for index, (_, _, check, pairs) in enumerate(rows):
            best[index] = max(best[index], rate(check, pairs, seconds / rounds))
    return best


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per grader")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; best is kept")
    args = parser.parse_args()
    rng = random.Random(0)
    countdown, gsm8k = get_task("countdown-4"), get_task("gsm8k")
    cd_problems = countdown.problems(200, seed=0)
    gsm_problems = gsm8k.problems(200, seed=0, split="test")
    cd_pairs = countdown_answers(cd_problems, rng)
    gsm_pairs = gsm8k_answers(gsm_problems, rng)
    rows: list[Row] = [
        ("countdown-4", "skillfactory (safe parser)", countdown.check, cd_pairs),
        ("countdown-4", "naive eval baseline", naive_countdown_check, cd_pairs),
        ("gsm8k", "skillfactory (final number)", gsm8k.check, gsm_pairs),
        ("gsm8k", "naive regex baseline", naive_gsm8k_check, gsm_pairs),
    ]
    print(agreement(rows))
    rates = best_rates(rows, args.seconds, args.rounds)
    print(f"{'task':<12} {'grader':<28} {'answers/s':>12} {'vs baseline':>12}")
    for index, ((task, grader, _, _), value) in enumerate(zip(rows, rates, strict=True)):
        baseline = rates[index | 1]
        print(f"{task:<12} {grader:<28} {value:>12,.0f} {value / baseline:>11.2f}x")
    print(
        "reproduce: OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/grader_throughput.py"
    )


if __name__ == "__main__":
    main()
