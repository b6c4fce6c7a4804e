"""Checks that can blow up, run where they can be stopped: worker processes with a time budget.

Some checks spend unbounded time on a short hostile answer: sympy, behind `math_verify`, turns
`9^{9^{9^{9}}}` into a big-integer power that runs in C holding the GIL, so in a grader thread
(the reward service's workers, the embedded sampler) the whole process stops, health checks
included. Signals only reach the main thread and a thread cannot be stopped, but a process can.
A `BoundedRunner` runs such a check in one of a few worker processes and waits for it without
holding the GIL. A call has a time budget, enforced twice:
- in the worker, a timer signal (the worker's main thread can take signals) interrupts the call
  at the budget; CPython checks for signals even inside big-integer arithmetic, so this ends
  most runaway checks and keeps the worker;
- the caller waits `KILL_GRACE_SECONDS` longer, then kills the worker (SIGKILL) and starts a
  fresh one in its place, for code that never returns to the interpreter (or swallows the signal).
Either way the caller gets `CheckStopped`; graders turn that into a wrong answer, and every
stopped call is counted per task in a process-wide tally (`stopped_checks`) that services export
as a metric.

Workers
- start lazily (no process until the first call), with the "spawn" start method: a fresh
  interpreter that inherits nothing (gRPC's threads, torch, locks held by other threads), so they
  are safe in any parent;
- run one call at a time; up to `max_workers` calls run at once, other callers wait for a worker
  (every call ends within its budget, so the wait is bounded too);
- ignore Ctrl-C (the parent decides), end with the parent (daemon, and on a closed pipe), and have
  their address space capped (`memory_bytes`), so a huge number is a `MemoryError` in the worker
  rather than memory taken from the service;
- are dropped in a forked child, which starts its own.

Functions and arguments cross a pipe (pickle): the function must be importable at module level and
its arguments and result picklable. The cost per call is a round trip over the pipe (tens of µs),
so a grader sends only what needs it (e.g. math500 decides string-equal and integer answers in
process first).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 5.0
"""A call's time budget once its worker is ready (math_verify's own default per operation)."""

KILL_GRACE_SECONDS = 1.0
"""How much longer than the budget the caller waits for the worker's own timer before killing it."""

START_TIMEOUT_SECONDS = 60.0
"""How long a new worker may take to start (a fresh interpreter plus the warm-up) on a busy machine."""

MAX_WORKERS = 2
"""Calls that run at once, each in its own worker process."""

WORKER_MEMORY_BYTES = 1 << 30
"""Address-space cap of a worker (RLIMIT_AS); sympy and math_verify take under 100 MiB."""

_READY = "ready"
_OK, _FAILED, _STOPPED = "ok", "failed", "stopped"
_KILL_WAIT_SECONDS = 5.0
_Reply = tuple[str, object]

T = TypeVar("T")


class CheckStopped(RuntimeError):
    """A call was stopped: it ran past its budget, or its worker died or did not start."""


class CheckFailed(RuntimeError):
    """The function raised in the worker; the message names the exception."""


class _Interrupted(BaseException):
    """Raised in a worker by its timer; a BaseException so that `except Exception` in the checked
    code (math_verify, sympy) does not swallow it."""


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted


_stopped: Counter[str] = Counter()
_stopped_lock = threading.Lock()


def stopped_checks() -> dict[str, int]:
    """Calls stopped so far in this process, by runner label (a task name): a snapshot."""
    with _stopped_lock:
        return dict(_stopped)


def _count_stopped(label: str) -> None:
    with _stopped_lock:
        _stopped[label] += 1


def serve_calls(
    conn: Connection,
    warm_up: Callable[[], object] | None,
    memory_bytes: int | None,
    timeout_s: float,
) -> None:
    """A worker's main loop: warm up, say ready, then answer `(function, args)` calls until the
    pipe closes. Each answer is `(_OK, result)`, `(_FAILED, "ExceptionName: message")` or
    `(_STOPPED, "")` when the call ran past `timeout_s`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _interrupt)
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if warm_up is not None:
        warm_up()
    conn.send(_READY)
    while True:
        try:
            function, args = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_answer(function, args, timeout_s))
        del function, args


def _answer(function: Callable[..., object], args: tuple[Any, ...], timeout_s: float) -> _Reply:
    """One call in a worker, interrupted by the timer at `timeout_s`."""
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return _OK, function(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Interrupted:
        return _STOPPED, ""
    except Exception as error:  # reported to the caller; the worker stays usable
        return _FAILED, f"{type(error).__name__}: {error}"[:500]


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False

    def stop(self) -> None:
        """Kill the process and reap it; close our end of the pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(_KILL_WAIT_SECONDS)
        self.conn.close()


_runners: weakref.WeakSet[BoundedRunner] = weakref.WeakSet()


class BoundedRunner:
    """Runs functions in worker processes, each call within `timeout_s` (see the module doc)."""

    def __init__(
        self,
        label: str,
        *,
        warm_up: Callable[[], object] | None = None,
        max_workers: int = MAX_WORKERS,
        timeout_s: float = CALL_TIMEOUT_SECONDS,
        start_timeout_s: float = START_TIMEOUT_SECONDS,
        memory_bytes: int | None = WORKER_MEMORY_BYTES,
    ) -> None:
        if max_workers < 1 or timeout_s <= 0 or start_timeout_s <= 0:
            raise ValueError("max_workers, timeout_s and start_timeout_s must be positive")
        self.label = label
        """Name stopped calls are counted under (the task's name)."""
        self.warm_up = warm_up
        """Run once in each new worker before its first call (imports, caches); must not raise."""
        self.max_workers = max_workers
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.memory_bytes = memory_bytes
        self._context = multiprocessing.get_context("spawn")
        self._reset()
        _runners.add(self)

    def _reset(self) -> None:
        self._free = threading.Condition()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._live = 0

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a worker; raises `CheckStopped` past the budget (the worker is then
        replaced) and `CheckFailed` when the function raised."""
        worker = self._acquire()
        try:
            status, value = self._run(worker, function, args)
        except CheckStopped as stopped:
            self._count(str(stopped))
            self._replace(worker)
            raise
        except BaseException:  # e.g. an unpicklable argument: the worker's state is unknown
            self._replace(worker)
            raise
        self._put_idle(worker)
        if status == _STOPPED:
            self._count(f"interrupted at its budget of {self.timeout_s:g} s")
            raise CheckStopped("interrupted at its budget")
        if status == _FAILED:
            raise CheckFailed(str(value))
        return value  # type: ignore[return-value]

    def _count(self, reason: str) -> None:
        _count_stopped(self.label)
        log.warning("check stopped", extra={"task": self.label, "reason": reason})

    def start(self) -> None:
        """Start the workers now rather than on the first calls (e.g. when a service starts)."""
        with self._free:
            missing = self.max_workers - self._live
            self._live += missing
        for _ in range(missing):
            self._put_idle(self._start_worker())

    def close(self) -> None:
        """Stop the idle workers (calls in flight keep theirs until they end)."""
        with self._free:
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._free.notify_all()
        for worker in idle:
            self._stop(worker)

    def _stop(self, worker: _Worker) -> None:
        with self._free:
            self._workers.discard(worker)
        worker.stop()

    def _acquire(self) -> _Worker:
        with self._free:
            while not self._idle and self._live >= self.max_workers:
                self._free.wait()
            if self._idle:
                return self._idle.pop()
            self._live += 1
        try:
            return self._start_worker()
        except BaseException:
            self._forget()
            raise

    def _start_worker(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=serve_calls,
            args=(theirs, self.warm_up, self.memory_bytes, self.timeout_s),
            name=f"bounded-check-{self.label}",
            daemon=True,
        )
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        with self._free:
            self._workers.add(worker)
        return worker

    def _run(
        self, worker: _Worker, function: Callable[..., object], args: tuple[Any, ...]
    ) -> _Reply:
        try:
            if not worker.ready:
                if not worker.conn.poll(self.start_timeout_s) or worker.conn.recv() != _READY:
                    raise CheckStopped(f"worker did not start within {self.start_timeout_s:g} s")
                worker.ready = True
            worker.conn.send((function, args))
            if not worker.conn.poll(self.timeout_s + KILL_GRACE_SECONDS):
                raise CheckStopped(f"killed past its budget of {self.timeout_s:g} s")
            reply: _Reply = worker.conn.recv()
        except (EOFError, OSError) as error:
            raise CheckStopped(f"worker died ({type(error).__name__})") from None
        return reply

    def _put_idle(self, worker: _Worker) -> None:
        with self._free:
            self._idle.append(worker)
            self._free.notify()

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start its replacement at once, so the next call finds one warming."""
        self._stop(worker)
        try:
            replacement = self._start_worker()
        except BaseException:
            self._forget()
            raise
        self._put_idle(replacement)

    def _forget(self) -> None:
        with self._free:
            self._live -= 1
            self._free.notify()

    def _drop_after_fork(self) -> None:
        """In a forked child: the workers belong to the parent; close our pipe ends, start afresh."""
        for worker in self._workers:
            worker.conn.close()
        self._reset()


def _after_fork_in_child() -> None:
    for runner in list(_runners):
        runner._drop_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
