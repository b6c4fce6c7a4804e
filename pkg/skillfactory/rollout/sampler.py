"""The embedded sampler: draw prompts under admission control, sample a group per prompt, grade
it, queue it — and the pieces every sampler shares.

The prompt stream is the run's problems in a fixed order, cycled; the i-th prompt drawn is
`problems[i % len(problems)]` with group id `p<i>`, so a resumed run can skip what it already
trained on. Problems whose GRPO prompt is longer than `grpo.max_prompt_length` tokens are left out
of the stream before anything is sampled (`prompt_fits`). A sampler admits prompts through the
`AdmissionController` (so groups are never more than `max_staleness` versions old when the learner
sees them), samples `group_size` completions of each with its engine, grades them with a
`GroupScorer` and puts the groups on the queue as `skillfactory.v1.Group` messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import torch

from skillfactory.engines.base import ChatMessage, Completion, Engine, SamplingParams, encode_prompt
from skillfactory.group import Group
from skillfactory.prompts import question_prompt
from skillfactory.queue import Queue, put_message
from skillfactory.rollout.scoring import GroupScorer
from skillfactory.rollout.streams import GROUPS_STREAM
from skillfactory.tasks import Problem
from skillfactory.train.staleness import AdmissionController
from skillfactory.wire.messages import group_to_proto


def grpo_prompt(problem: Problem) -> list[ChatMessage]:
    """The chat a GRPO prompt is: the question alone, as in the silver traces' user turn."""
    return [{"role": m["role"], "content": m["content"]} for m in question_prompt(problem.question)]


def prompt_fits(tokenizer: Any, limit: int | None) -> Callable[[Problem], bool]:
    """Whether a problem's GRPO prompt, tokenized as the engines tokenize it, has at most `limit`
    tokens (None or 0: no limit)."""

    def fits(problem: Problem) -> bool:
        return not limit or len(encode_prompt(tokenizer, grpo_prompt(problem))) <= limit

    return fits


def make_group(
    index: int,
    problem: Problem,
    completions: Sequence[Completion],
    rewards: Sequence[float],
    *,
    sampler_id: str,
    epoch: str = "",
) -> Group:
    """The group of prompt `index` of the run's prompt stream (a reward that carries its terms,
    a `ScoredReward`, has them kept on the group)."""
    return Group(
        group_id=f"p{index}",
        problem=problem,
        prompt_token_ids=completions[0].prompt_token_ids,
        completions=list(completions),
        rewards=[float(r) for r in rewards],
        reward_terms=[dict(getattr(r, "terms", {})) for r in rewards],
        failed_terms=[tuple(getattr(r, "failed", ())) for r in rewards],
        sampler_id=sampler_id,
        prompt_index=index,
        epoch=epoch,
    )


class PromptStream:
    """Thread-safe, resumable stream of `(index, problem)`: `problems` cycled in order, skipping
    indices `skip(index)` says are done."""

    def __init__(
        self, problems: Sequence[Problem], skip: Callable[[int], bool] | None = None
    ) -> None:
        if not problems:
            raise ValueError("a prompt stream needs at least one problem")
        self.problems = list(problems)
        self._skip = skip or (lambda index: False)
        self._next = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> list[tuple[int, Problem]]:
        """The next `n` prompts not yet done."""
        taken: list[tuple[int, Problem]] = []
        with self._lock:
            while len(taken) < n:
                index = self._next
                self._next += 1
                if not self._skip(index):
                    taken.append((index, self.problems[index % len(self.problems)]))
        return taken


class Sampler:
    """Samples groups for admitted prompts with one engine and puts them on the queue."""

    def __init__(
        self,
        engine: Engine,
        score: GroupScorer,
        params: SamplingParams,
        prompts: PromptStream,
        admission: AdmissionController,
        queue: Queue,
        *,
        sampler_id: str = "sampler-0",
        prompts_per_call: int = 1,
        engine_lock: AbstractContextManager[object] | None = None,
        seed: int = 0,
        run_id: str = "",
        threads: int | None = None,
    ) -> None:
        if params.n < 2:
            raise ValueError("a GRPO group needs at least 2 completions (params.n)")
        self.engine = engine
        self.score = score
        self.params = params
        self.prompts = prompts
        self.admission = admission
        self.queue = queue
        self.sampler_id = sampler_id
        self.prompts_per_call = max(1, prompts_per_call)
        self.engine_lock = engine_lock or nullcontext()
        self.seed = seed
        self.run_id = run_id
        self.threads = threads
        """Torch intra-op threads of the sampler's thread (None: the process default)."""
        self.groups_sampled = 0
        self.error: BaseException | None = None

    def sample(self, items: Sequence[tuple[int, Problem]]) -> list[Group]:
        """One group per `(index, problem)`: generate, then grade every completion."""
        params = replace(self.params, seed=self.seed + items[0][0])
        with self.engine_lock:
            outputs = self.engine.generate([grpo_prompt(p) for _, p in items], params)
        rewards = self.score([(problem, c) for (_, problem), c in zip(items, outputs, strict=True)])
        return [
            make_group(index, problem, completions, values, sampler_id=self.sampler_id)
            for (index, problem), completions, values in zip(items, outputs, rewards, strict=True)
        ]

    def run(self, stop: threading.Event) -> None:
        """Sample until `stop` is set or admission closes; an error is kept in `self.error`."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # this thread's OpenMP team only
        try:
            while not stop.is_set():
                admitted = self.admission.admit_blocking(self.prompts_per_call, timeout=0.2)
                if admitted == 0:
                    continue
                for group in self.sample(self.prompts.take(admitted)):
                    put_message(self.queue, GROUPS_STREAM, group_to_proto(group, self.run_id))
                    self.groups_sampled += 1
        except BaseException as error:  # handed to the learner thread, which re-raises it
            self.error = error
            stop.set()

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run in a daemon thread."""
        thread = threading.Thread(target=self.run, args=(stop,), name=self.sampler_id, daemon=True)
        thread.start()
        return thread
