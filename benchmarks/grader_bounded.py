"""Bounded graders vs today's in-process graders: answers per second on normal answers, side by side.

Reproduce (one caller thread; add `--threads 4` for callers sharing the workers like the reward
service's gRPC threads):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grader_bounded.py

"Today" is the grading before issue 15's finding 5, copied here as the baseline: math500 runs
math_verify in the calling process (signal timeouts in the main thread, none elsewhere), gsm8k
reads numbers with `int()`/`Fraction()` without caps. "Bounded" is the library's grader: math500
decides string-equal and integer answers in process and sends the rest to a worker process with a
time budget (`skillfactory.tasks.bounded_check`); gsm8k reads numbers with hard caps.

Answers are built from the packaged data (`--problems` problems per task, seed 0), six per problem:
math500: the gold, boxed, with spaces, "x = gold", a wrong integer, a wrong fraction; gsm8k: the
gold bare, with $, with units, in a sentence, wrong, "N.00". Both graders see the same extracted
answers. The "math_verify only" row keeps the math500 answers that the bounded grader sends to a
worker, so it isolates the worker's cost (pipe round trip, scheduling) from the in-process shortcuts.

Each row is timed in `--rounds` rounds, today and bounded alternating (which goes first alternates
too), `--seconds` per grader per round; the ratio is the median over rounds of bounded / today.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from skillfactory.tasks import Problem, get_task, gsm8k, math500

Check = Callable[[Problem, str], bool]
Pairs = list[tuple[Problem, str]]

# ---------------------------------------------------------------- today's graders (the baseline)

_TODAY_TIMEOUT_SECONDS = 5


def _today_timeout() -> int | None:
    return _TODAY_TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def _today_parse(text: str) -> list[Any]:
    # deferred: heavy or optional (math_verify)
    from math_verify import parse

    delimited = "$" in text or "\\boxed" in text
    parsed = parse(text if delimited else f"${text}$", parsing_timeout=_today_timeout())
    return parsed if parsed or delimited else parse(text, parsing_timeout=_today_timeout())


@lru_cache(maxsize=4096)
def _today_parse_gold(gold: str) -> list[Any]:
    return _today_parse(gold)


def today_math500_check(problem: Problem, answer: str) -> bool:
    """math500's check before the fix: math_verify in the calling process."""
    # deferred: heavy or optional (math_verify)
    from math_verify import verify

    if not answer.strip() or len(answer) > math500.MAX_ANSWER_CHARS:
        return False
    if math500.normalize_answer(answer) == math500.normalize_answer(problem.answer):
        return True
    try:
        gold_parsed, answer_parsed = _today_parse_gold(problem.answer), _today_parse(answer)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=_today_timeout()))
    except Exception:
        return False


_TODAY_NUMBER = re.compile(
    r"(?:(?<![\w)])-)?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+|/[0-9]+)?"
)
_NEGATIVE_SIGNS = str.maketrans({"−": "-", "–": "-"})


def _today_exact_number(text: str) -> int | Fraction | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def today_gsm8k_check(problem: Problem, answer: str) -> bool:
    """gsm8k's check before the fix: numbers read without caps on the gold."""
    numbers = _TODAY_NUMBER.findall(answer[-gsm8k.MAX_ANSWER_CHARS :].translate(_NEGATIVE_SIGNS))
    if not numbers or len(number := numbers[-1].replace(",", "")) > 60:
        return False
    value = _today_exact_number(number)
    return value is not None and value == _today_exact_number(problem.answer.replace(",", ""))


# ---------------------------------------------------------------- normal answers


def math500_answers(problems: Sequence[Problem], rng: random.Random) -> Pairs:
    """Six answers per problem: right three ways (as is, boxed, spaced), right as an equation,
    wrong as an integer, wrong as a fraction."""
    pairs = []
    for problem in problems:
        gold = problem.answer
        answers = [
            gold,
            f"\\boxed{{{gold}}}",
            gold.replace(",", ", ") if "," in gold else f" {gold} ",
            f"x = {gold}",
            "7" if gold != "7" else "8",
            "\\frac{1}{7}",
        ]
        pairs += [(problem, answer) for answer in answers]
    rng.shuffle(pairs)
    return pairs


def gsm8k_answers(problems: Sequence[Problem], rng: random.Random) -> Pairs:
    """Six answers per problem: bare, with $, with units, in a sentence, wrong, "N.00"."""
    pairs = []
    for problem in problems:
        gold = problem.answer
        answers = [gold, f"${gold}", f"{gold} dollars", f"The answer is {gold}.", "7", f"{gold}.00"]
        pairs += [(problem, answer) for answer in answers]
    rng.shuffle(pairs)
    return pairs


def needs_math_verify(problem: Problem, answer: str) -> bool:
    """Whether the bounded math500 grader sends this answer to a worker."""
    if math500.normalize_answer(answer) == math500.normalize_answer(problem.answer):
        return False
    integers = math500.plain_integer(problem.answer), math500.plain_integer(answer)
    return None in integers


# ---------------------------------------------------------------- timing


@dataclass
class Row:
    name: str
    today: Check
    bounded: Check
    pairs: Pairs


def rate(check: Check, pairs: Pairs, seconds: float, threads: int) -> float:
    """Checks per second over repeated passes through `pairs` for about `seconds`, by `threads`
    callers each starting at its own offset."""
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def caller(index: int) -> None:
        offset = index * len(pairs) // threads
        order = pairs[offset:] + pairs[:offset]
        while time.perf_counter() < stop:
            for problem, answer in order:
                check(problem, answer)
            done[index] += len(order)

    start = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - start)


def agreement(row: Row) -> float:
    """Share of answers on which both graders give the same verdict (a sanity check)."""
    same = sum(row.today(p, a) == row.bounded(p, a) for p, a in row.pairs)
    return same / len(row.pairs)


def measure(row: Row, seconds: float, rounds: int, threads: int) -> tuple[float, float, float]:
    """Median today rate, median bounded rate, median per-round ratio bounded / today."""
    todays, boundeds, ratios = [], [], []
    for index in range(rounds):
        order = [("today", row.today), ("bounded", row.bounded)]
        if index % 2:
            order.reverse()
        rates = {name: rate(check, row.pairs, seconds, threads) for name, check in order}
        todays.append(rates["today"])
        boundeds.append(rates["bounded"])
        ratios.append(rates["bounded"] / rates["today"])
    return statistics.median(todays), statistics.median(boundeds), statistics.median(ratios)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100, help="problems per task")
    parser.add_argument("--seconds", type=float, default=2.0, help="per grader per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="caller threads")
    args = parser.parse_args()
    rng = random.Random(0)
    math_task, gsm_task = get_task("math500"), get_task("gsm8k")
    math_pairs = math500_answers(math_task.problems(args.problems, seed=0), rng)
    gsm_pairs = gsm8k_answers(gsm_task.problems(args.problems, seed=0, split="test"), rng)
    rows = [
        Row("math500, all answers", today_math500_check, math_task.check, math_pairs),
        Row(
            "math500, math_verify only",
            today_math500_check,
            math_task.check,
            [(p, a) for p, a in math_pairs if needs_math_verify(p, a)],
        ),
        Row("gsm8k", today_gsm8k_check, gsm_task.check, gsm_pairs),
    ]
    for row in rows:  # warm caches and start the workers; check that both graders agree
        print(f"{row.name}: {len(row.pairs)} answers, verdicts agree on {agreement(row):.1%}")
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'row':<28} {'today/s':>10} {'bounded/s':>10} {'bounded/today':>14}")
    for row in rows:
        today, bounded, ratio = measure(row, args.seconds, args.rounds, args.threads)
        print(f"{row.name:<28} {today:>10,.0f} {bounded:>10,.0f} {ratio:>13.2f}x")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        "reproduce: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grader_bounded.py "
        f"--problems {args.problems} --seconds {args.seconds:g} --rounds {args.rounds} "
        f"--threads {args.threads}"
    )


if __name__ == "__main__":
    main()
