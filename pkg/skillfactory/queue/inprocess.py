"""The embedded queue: Redis Streams semantics between threads of one process.

Each stream holds at most `max_size` entries. Like Redis, acked entries stay in the stream (a
group created later still sees them) until room is needed: a full stream drops its oldest entry
once every existing group has had it delivered and acked. An entry some group has not acked is
never dropped; `put` waits instead (with no group yet, nothing is dropped), so a slow or dead
consumer applies back-pressure rather than losing data. Redis instead trims the oldest entries
beyond `max_len` whatever their state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from skillfactory.queue.base import Entry, QueueClosed, QueueFull


@dataclass
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int


@dataclass
class _Group:
    next_index: int
    """Absolute index of the next entry to deliver."""
    pel: dict[int, _Pending] = field(default_factory=dict)
    """Pending entries by absolute index, in index order."""


@dataclass
class _Stream:
    entries: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    """(id, payload) by absolute index; indices head..tail-1 are held."""
    index_of: dict[str, int] = field(default_factory=dict)
    head: int = 0
    tail: int = 0
    groups: dict[str, _Group] = field(default_factory=dict)
    last_ms: int = 0
    last_seq: int = -1


class InProcessQueue:
    """Thread-safe in-process implementation of `Queue`."""

    def __init__(self, max_size: int = 1024, claim_idle_s: float = 60.0) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self.claim_idle_s = claim_idle_s
        self._streams: dict[str, _Stream] = {}
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    # -- helpers (call with the lock held) ---------------------------------------------------

    def _stream(self, name: str) -> _Stream:
        if self._closed:
            raise QueueClosed("queue is closed")
        s = self._streams.get(name)
        if s is None:
            s = self._streams[name] = _Stream()
        return s

    def _group(self, s: _Stream, name: str) -> _Group:
        g = s.groups.get(name)
        if g is None:
            g = s.groups[name] = _Group(next_index=s.head)
        return g

    def _new_id(self, s: _Stream) -> str:
        ms = int(time.time() * 1000)
        if ms > s.last_ms:
            s.last_ms, s.last_seq = ms, 0
        else:
            s.last_seq += 1
        return f"{s.last_ms}-{s.last_seq}"

    def _make_room(self, s: _Stream) -> bool:
        """Drop the oldest entry if the stream is full and every group has acked it."""
        if s.tail - s.head < self.max_size:
            return True
        if not s.groups or not all(
            s.head < g.next_index and s.head not in g.pel for g in s.groups.values()
        ):
            return False
        entry_id, _ = s.entries.pop(s.head)
        del s.index_of[entry_id]
        s.head += 1
        return True

    @staticmethod
    def _wait(cond: threading.Condition, deadline: float | None) -> bool:
        """Wait for a notification; False once the deadline has passed."""
        if deadline is None:
            cond.wait()
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        cond.wait(remaining)
        return True

    # -- Queue -------------------------------------------------------------------------------

    def put(self, stream: str, payload: bytes, timeout: float | None = None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            s = self._stream(stream)
            while not self._make_room(s):
                if not self._wait(self._cond, deadline):
                    raise QueueFull(
                        f"stream {stream!r} held {self.max_size} entries for {timeout} s"
                    )
                s = self._stream(stream)
            entry_id = self._new_id(s)
            s.entries[s.tail] = (entry_id, bytes(payload))
            s.index_of[entry_id] = s.tail
            s.tail += 1
            self._cond.notify_all()
            return entry_id

    def put_many(self, stream: str, payloads: Sequence[bytes]) -> list[str]:
        return [self.put(stream, payload) for payload in payloads]

    def get(
        self, stream: str, group: str, consumer: str, count: int = 1, block_s: float | None = 0.0
    ) -> list[Entry]:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        deadline = None if block_s is None else time.monotonic() + block_s
        with self._cond:
            s = self._stream(stream)
            g = self._group(s, group)
            while g.next_index >= s.tail:
                if not self._wait(self._cond, deadline):
                    return []
                s = self._stream(stream)
            now = time.monotonic()
            out: list[Entry] = []
            while g.next_index < s.tail and len(out) < count:
                index = g.next_index
                entry_id, payload = s.entries[index]
                g.pel[index] = _Pending(consumer, now, 1)
                out.append(Entry(entry_id, payload, 1))
                g.next_index += 1
            return out

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        with self._cond:
            s = self._stream(stream)
            g = s.groups.get(group)
            if g is None:  # nothing was delivered to it; like XACK, do not create it
                return
            for entry_id in ids:
                index = s.index_of.get(entry_id)
                if index is not None:
                    g.pel.pop(index, None)
            self._cond.notify_all()  # a full stream may now drop its oldest entry

    def reclaim(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle_s: float | None = None,
        count: int = 100,
    ) -> list[Entry]:
        min_idle = self.claim_idle_s if min_idle_s is None else min_idle_s
        with self._cond:
            s = self._stream(stream)
            g = self._group(s, group)
            now = time.monotonic()
            out: list[Entry] = []
            for index, p in g.pel.items():
                if len(out) >= count:
                    break
                if now - p.delivered_at < min_idle:
                    continue
                p.consumer, p.delivered_at, p.deliveries = consumer, now, p.deliveries + 1
                entry_id, payload = s.entries[index]
                out.append(Entry(entry_id, payload, p.deliveries))
            return out

    def pending(self, stream: str, group: str) -> int:
        with self._cond:
            return len(self._group(self._stream(stream), group).pel)

    def depth(self, stream: str, group: str) -> int:
        with self._cond:
            s = self._stream(stream)
            return s.tail - self._group(s, group).next_index

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
