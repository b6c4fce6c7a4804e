"""The distributed queue: Redis Streams with consumer groups.

Each stream is the key `f"{stream_prefix}:{stream}"`; an entry is one field `p` holding the
payload. `put` is XADD with MAXLEN ~ `max_len` (Redis trims the oldest entries beyond about that
many, *whatever their state*: keep consumers within `max_len` of producers — the dispatcher's
admission control does — or entries are lost); `get` is XREADGROUP `>`; `ack` is XACK; `reclaim`
is XAUTOCLAIM plus the delivery counts from XPENDING, in one Lua script; `pending` is the XPENDING
summary and `depth` the group's `lag` from XINFO GROUPS. Groups are created on demand
(XGROUP CREATE … 0 MKSTREAM).

A pending entry that was trimmed away is dropped from the group by XAUTOCLAIM; such entries are
logged and counted in `lost`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from skillfactory.queue.base import Entry, QueueClosed
from skillfactory.runspec import RedisQueueSpec

log = logging.getLogger(__name__)

FIELD = b"p"
RETRIES = 40
SOCKET_TIMEOUT_S = 30.0
"""Longest a Redis command may take to answer."""
CONNECT_TIMEOUT_S = 10.0
BLOCK_SLICE_S = 20.0
"""Longest one blocking read waits (below the socket timeout); longer waits loop."""
"""Retries of a command while Redis is unreachable or loading (backoff capped at 1 s: ~35 s)."""
"""The stream field that holds the payload."""

# XAUTOCLAIM, then each claimed entry's delivery count, atomically.
# ARGV: group, consumer, min_idle_ms, start_id, count. Returns {cursor, entries, counts, deleted}.
_RECLAIM_LUA = """
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, e in ipairs(res[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[i] = p[1][4] else counts[i] = 0 end
end
return {res[1], res[2], counts, res[3] or {}}
"""

# Entries after an id (exclusive), counted on the server: the fallback when XINFO's lag is nil.
_COUNT_AFTER_LUA = """
local n = 0
local start = '(' .. ARGV[1]
while true do
  local r = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  if #r == 0 then break end
  n = n + #r
  start = '(' .. r[#r][1]
end
return n
"""


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamsQueue:
    """`Queue` over Redis Streams; thread-safe (redis-py's connection pool)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        password: str | None = None,
        stream_prefix: str = "skillfactory",
        max_len: int = 100_000,
        claim_idle_s: float = 60.0,
        client: redis.Redis | None = None,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
    ) -> None:
        # Connect and socket timeouts bound every command (a host that accepts and never
        # answers cannot wedge a caller): a blocking read waits in slices shorter than the socket
        # timeout (`get`). Commands are
        # retried for about `RETRY_SECONDS` while Redis restarts (a retried XADD may add an entry
        # twice: consumers drop duplicates, see the learner's and samplers' notes).
        self.client: redis.Redis = client or redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            protocol=2,
            retry=Retry(
                ExponentialBackoff(cap=1.0, base=0.05),
                RETRIES,
                supported_errors=(
                    redis.exceptions.ConnectionError,
                    redis.exceptions.BusyLoadingError,
                ),
            ),
            # A restarting Redis refuses connections or is loading: retried. A command that
            # times out is not retried (a silent host would hold the caller for minutes).
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError],
        )
        self.block_slice_s = min(BLOCK_SLICE_S, socket_timeout_s / 2)
        self.stream_prefix = stream_prefix
        self.max_len = max_len
        self.claim_idle_s = claim_idle_s
        self.lost = 0
        """Pending entries found trimmed away by `reclaim` (their payload is gone)."""
        self._groups: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._reclaim_script = self.client.register_script(_RECLAIM_LUA)
        self._count_after_script = self.client.register_script(_COUNT_AFTER_LUA)

    @classmethod
    def from_spec(cls, spec: RedisQueueSpec) -> RedisStreamsQueue:
        """Connect as the spec says; the password comes from the env var `spec.password_env`."""
        password = os.environ.get(spec.password_env) if spec.password_env else None
        return cls(
            spec.url,
            password=password or None,
            stream_prefix=spec.stream_prefix,
            max_len=spec.max_len,
            claim_idle_s=spec.claim_idle_ms / 1000,
        )

    # -- helpers -----------------------------------------------------------------------------

    def key(self, stream: str) -> str:
        """The Redis key of a stream."""
        if self._closed:
            raise QueueClosed("queue is closed")
        return f"{self.stream_prefix}:{stream}"

    def _ensure_group(self, key: str, group: str) -> None:
        with self._lock:
            if (key, group) in self._groups:
                return
        try:
            self.client.xgroup_create(key, group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        with self._lock:
            self._groups.add((key, group))

    def _with_group(self, key: str, group: str, call: Any) -> Any:
        """Run `call()` with the group in place; recreate it once if it vanished (key deleted)."""
        self._ensure_group(key, group)
        try:
            return call()
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
        with self._lock:
            self._groups.discard((key, group))
        self._ensure_group(key, group)
        return call()

    @staticmethod
    def _entries(raw: list[Any], counts: list[Any] | None = None) -> list[Entry]:
        out = []
        for i, (entry_id, fields) in enumerate(raw):
            if isinstance(fields, list):  # from Lua: a flat [field, value, ...] list
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            deliveries = 1 if counts is None else int(counts[i])
            # An entry without the payload field (written by hand, or by something else) reads
            # as an empty payload: undecodable for its reader, never a crash.
            out.append(Entry(_str(entry_id), bytes(fields.get(FIELD, b"")), deliveries))
        return out

    # -- Queue -------------------------------------------------------------------------------

    def put(self, stream: str, payload: bytes, timeout: float | None = None) -> str:
        """XADD with MAXLEN ~ max_len; never waits (`timeout` is accepted and ignored)."""
        entry_id = self.client.xadd(
            self.key(stream), {FIELD: payload}, maxlen=self.max_len, approximate=True
        )
        return _str(entry_id)

    def put_many(self, stream: str, payloads: Sequence[bytes]) -> list[str]:
        """Every XADD of `payloads` in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for payload in payloads:
            pipe.xadd(self.key(stream), {FIELD: payload}, maxlen=self.max_len, approximate=True)
        return [_str(entry_id) for entry_id in pipe.execute()]

    def get(
        self, stream: str, group: str, consumer: str, count: int = 1, block_s: float | None = 0.0
    ) -> list[Entry]:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        key = self.key(stream)
        deadline = None if block_s is None else time.monotonic() + block_s
        while True:
            left = self.block_slice_s if deadline is None else deadline - time.monotonic()
            wait = min(self.block_slice_s, max(0.0, left))
            block = max(1, round(wait * 1000)) if block_s != 0 and wait > 0 else None
            response = self._with_group(
                key,
                group,
                lambda block=block: self.client.xreadgroup(
                    group, consumer, {key: ">"}, count=count, block=block
                ),
            )
            if response:
                return self._entries(response[0][1])
            if block is None or (deadline is not None and time.monotonic() >= deadline):
                return []

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        if ids:
            self.client.xack(self.key(stream), group, *ids)

    def reclaim(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle_s: float | None = None,
        count: int = 100,
    ) -> list[Entry]:
        key = self.key(stream)
        min_idle_ms = round(1000 * (self.claim_idle_s if min_idle_s is None else min_idle_s))
        out: list[Entry] = []
        cursor: bytes | str = "0-0"
        while len(out) < count:
            args = [group, consumer, min_idle_ms, cursor, count - len(out)]
            cursor, raw, counts, deleted = self._with_group(
                key, group, lambda a=args: self._reclaim_script(keys=[key], args=a)
            )
            out.extend(self._entries(raw, counts))
            if deleted:
                self.lost += len(deleted)
                log.warning(
                    "%d pending entries of %s/%s were trimmed before being acked: %s",
                    len(deleted),
                    key,
                    group,
                    ", ".join(_str(d) for d in deleted),
                )
            if _str(cursor) == "0-0":
                break
        return out

    def pending(self, stream: str, group: str) -> int:
        key = self.key(stream)
        summary = self._with_group(key, group, lambda: self.client.xpending(key, group))
        return int(summary["pending"])

    def depth(self, stream: str, group: str) -> int:
        key = self.key(stream)
        self._ensure_group(key, group)
        for info in self.client.xinfo_groups(key):
            if _str(info["name"]) != group:
                continue
            if info.get("lag") is not None:
                return int(info["lag"])
            last = _str(info["last-delivered-id"])
            return int(self._count_after_script(keys=[key], args=[last]))
        with self._lock:  # the key was deleted under us: recreate the group, it lags 0
            self._groups.discard((key, group))
        self._ensure_group(key, group)
        return 0

    def close(self) -> None:
        self._closed = True
        self.client.close()
