"""One engine, many callers: a rollout service merges all concurrent work into large engine calls.

Sampler workers (GRPO), generation workers (stage 1, eval) and `Generate` calls all `submit` work
— prompts, sampling, optional per-prompt seeds, and the model / learner epoch / weight store the
engine must hold — and wait for their completions. One thread owns the engine: it takes the oldest
waiting work, merges every waiting work that needs the same engine state and sampling (the seed
aside) up to `max_rows` rows (prompts × n), catches the engine up (`EngineSlot.prepare`: model,
epoch, newest verified weights) and makes one call. Work that arrives during a call waits for the
next, so the more callers, the larger the calls — what vLLM's continuous batching and a GPU's
throughput need. Callers answered by one call resubmit a moment apart; the engine thread waits up
to `linger_s` for as many works as its last call merged before it takes the next, so they stay
together (a lone caller never waits: its last call merged one).

Seeds: a work alone keeps its own (`seeds`, or the call seed in its sampling); merged works get one
seed per prompt (`prompt_seeds` for a work seeded by its sampling, fresh random ones for unseeded
work), so an engine that honours per-prompt seeds answers a merged call as it would each work alone.

`exclusive(fn)` runs `fn` on the engine thread between two calls (a weight load); nothing else
touches the engine. Metrics: rows per engine call (`skillfactory_rollout_batch_rows`), works merged
per call (`skillfactory_rollout_merged_requests`), and how long work waited for its call
(`skillfactory_rollout_queue_wait_seconds`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from skillfactory.engines.base import (
    Completion,
    Engine,
    Prompt,
    SamplingParams,
    generate_with,
    prompt_seeds,
)
from skillfactory.rollout.engine_slot import EngineSlot

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class EngineState:
    """What the engine must hold for a work: model folder, learner epoch, weight store root."""

    model: str = ""
    epoch: str = ""
    weights_root: str = ""


@dataclass
class Work:
    """Prompts waiting for one engine call."""

    prompts: list[Prompt]
    params: SamplingParams
    seeds: list[int] | None
    state: EngineState
    submitted: float = field(default_factory=time.perf_counter)
    future: Future[list[list[Completion]]] = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)
    """Set when its caller is gone (cancelled, past its deadline): see `abandon`."""

    def abandon(self) -> None:
        """Nobody waits for this work any more: it is dropped if not started, and a call serving
        only abandoned works stops at its next decode step (an interruptible engine)."""
        self.abandoned.set()
        self.future.cancel()

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.params.n

    @property
    def key(self) -> tuple[EngineState, SamplingParams]:
        """Works with equal keys can share a call."""
        return self.state, replace(self.params, seed=None)

    def merged_seeds(self) -> list[int]:
        """One seed per prompt, for a call shared with other work."""
        if self.seeds is not None:
            return list(self.seeds)
        seeded = prompt_seeds(self.params, len(self.prompts))
        if seeded is not None:
            return seeded
        return [random.getrandbits(63) for _ in self.prompts]


class BatchObserver(Protocol):
    """What the batcher reports (the rollout service's metrics implement it)."""

    def engine_call(self, rows: int, works: int, seconds: float, tokens: int) -> None: ...

    def waited(self, seconds: float) -> None: ...

    def engine_ready(self, engine: Engine, reloaded: bool, seconds: float) -> None: ...


class Unobserved:
    """A `BatchObserver` that records nothing."""

    def engine_call(self, rows: int, works: int, seconds: float, tokens: int) -> None:
        return None

    def waited(self, seconds: float) -> None:
        return None

    def engine_ready(self, engine: Engine, reloaded: bool, seconds: float) -> None:
        return None


class EngineBatcher:
    """The one thread that calls the engine (see the module docstring)."""

    def __init__(
        self,
        slot: EngineSlot,
        max_rows: int = 64,
        *,
        linger_s: float = 0.02,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.slot = slot
        self.max_rows = max_rows
        self.linger_s = linger_s
        self.observer: BatchObserver = observer or Unobserved()
        self.calls = 0
        self.rows = 0
        self._expected = 1
        """Works the next call waits for: the last call's and those waiting when it ended."""
        self._waiting: list[Work | tuple[Callable[[], Any], Future[Any]]] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="engine-batcher", daemon=True)
        self._thread.start()

    # callers --------------------------------------------------------------------------------

    def submit(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        state: EngineState | None = None,
        timeout_s: float | None = None,
    ) -> list[list[Completion]]:
        """`params.n` completions of each prompt, from a call this work may share; raises what
        the engine raised."""
        if not prompts:
            return []
        (work,) = self.submit_all([(list(prompts), seeds)], params, state)
        return work.future.result(timeout=timeout_s)

    def submit_all(
        self,
        chunks: Sequence[tuple[Sequence[Prompt], Sequence[int] | None]],
        params: SamplingParams,
        state: EngineState | None = None,
    ) -> list[Work]:
        """Queue several works at once (their futures carry the results): nothing queued after
        them — a weight load — runs before they are served."""
        works = [
            Work(list(p), params, list(s) if s is not None else None, state or EngineState())
            for p, s in chunks
            if p
        ]
        with self._changed:
            if self._closed:
                raise RuntimeError("the engine batcher is closed")
            self._waiting.extend(works)
            self._changed.notify_all()
        return works

    def exclusive(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run `fn` on the engine thread, between two engine calls."""
        future: Future[T] = Future()
        self._put((fn, future))
        return future.result(timeout=timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop: the call in hand ends at its next decode step (an interruptible engine) and its
        works, like all waiting work, fail with `RuntimeError`."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout_s)

    def _put(self, item: Work | tuple[Callable[[], Any], Future[Any]]) -> None:
        with self._changed:
            if self._closed:
                raise RuntimeError("the engine batcher is closed")
            self._waiting.append(item)
            self._changed.notify_all()

    # the engine thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next()
            if batch is None:
                return
            if isinstance(batch, tuple):
                self._call_exclusive(*batch)
            else:
                self._serve(batch)

    def _next(self) -> list[Work] | tuple[Callable[[], Any], Future[Any]] | None:
        with self._changed:
            while not self._waiting and not self._closed:
                self._changed.wait()
            if self._closed:
                for item in self._waiting:
                    future = item.future if isinstance(item, Work) else item[1]
                    if not future.cancelled():
                        future.set_exception(RuntimeError("the engine batcher is closed"))
                self._waiting.clear()
                return None
            first = self._waiting[0]
            if not isinstance(first, Work):
                self._waiting.pop(0)
                return first
            self._linger(first)
            return self._take_merge(first)

    def _linger(self, first: Work) -> None:
        """Wait up to `linger_s` (the lock is released while waiting) for the callers of the last
        call and those that waited through it, unless the batch is already full: callers answered
        together resubmit a moment apart, and a call taken at the first of them would split them
        into cohorts that then alternate."""
        deadline = time.perf_counter() + self.linger_s
        while not self._closed:
            like = [w for w in self._waiting if isinstance(w, Work) and w.key == first.key]
            left = deadline - time.perf_counter()
            full = sum(w.rows for w in like) >= self.max_rows
            if full or len(like) >= self._expected or left <= 0:
                return
            self._changed.wait(left)

    def _take_merge(self, first: Work) -> list[Work]:
        """`first` and every later work of its key that fits within `max_rows` (a first larger
        than the limit alone); an exclusive job stops the merge (it runs before later work)."""
        taken, rows = [first], first.rows
        kept: list[Work | tuple[Callable[[], Any], Future[Any]]] = []
        blocked = False
        for item in self._waiting[1:]:
            if (
                not blocked
                and isinstance(item, Work)
                and item.key == first.key
                and rows + item.rows <= self.max_rows
            ):
                taken.append(item)
                rows += item.rows
            else:
                blocked = blocked or not isinstance(item, Work)
                kept.append(item)
        self._waiting = kept
        return taken

    def _call_exclusive(self, fn: Callable[[], Any], future: Future[Any]) -> None:
        try:
            future.set_result(fn())
        except BaseException as error:  # handed to the caller
            future.set_exception(error)

    def _serve(self, taken: list[Work]) -> None:
        works = [work for work in taken if work.future.set_running_or_notify_cancel()]
        if not works:  # every one abandoned while it waited
            return
        started = time.perf_counter()
        for work in works:
            self.observer.waited(started - work.submitted)
        try:
            engine = self._prepare(works[0].state)
            results = self._generate(engine, works)
            if self._closed:
                raise RuntimeError("the engine batcher closed during the call")
        except BaseException as error:  # every caller of the call gets it
            for work in works:
                work.future.set_exception(error)
            return
        seconds = time.perf_counter() - started
        rows = sum(w.rows for w in works)
        tokens = sum(len(c.token_ids) for group in results for c in group)
        self.calls += 1
        self.rows += rows
        self.observer.engine_call(rows, len(works), seconds, tokens)
        with self._changed:
            self._expected = len(works) + sum(isinstance(w, Work) for w in self._waiting)
        offset = 0
        for work in works:
            work.future.set_result(results[offset : offset + len(work.prompts)])
            offset += len(work.prompts)

    def _prepare(self, state: EngineState) -> Engine:
        loads, started = self.slot.loads, time.perf_counter()
        if state.model or state.epoch or state.weights_root:
            engine = self.slot.prepare(state.model, state.epoch, state.weights_root)
        else:
            engine = self.slot.engine
        self.observer.engine_ready(engine, self.slot.loads > loads, time.perf_counter() - started)
        return engine

    def _generate(self, engine: Engine, works: list[Work]) -> list[list[Completion]]:
        prompts = [p for w in works for p in w.prompts]
        params = works[0].params

        def should_stop() -> bool:
            return self._closed or all(work.abandoned.is_set() for work in works)

        if len(works) == 1:
            return generate_with(engine, prompts, params, works[0].seeds, should_stop)
        seeds = [s for w in works for s in w.merged_seeds()]
        return generate_with(engine, prompts, replace(params, seed=None), seeds, should_stop)
