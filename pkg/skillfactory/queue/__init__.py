"""Queues between samplers and the learner: one interface, in-process and Redis Streams backends.

`open_queue(spec)` builds the backend a run spec names; `put_message` / `read_messages` carry
protobuf messages. See `skillfactory.queue.base` for the shared semantics.
"""

from __future__ import annotations

from skillfactory.queue.base import (
    Entry,
    Queue,
    QueueClosed,
    QueueError,
    QueueFull,
    UndecodablePayload,
    put_message,
    put_messages,
    read_messages,
)
from skillfactory.queue.inprocess import InProcessQueue
from skillfactory.runspec import InProcessQueueSpec, RedisQueueSpec

__all__ = [
    "Entry",
    "InProcessQueue",
    "Queue",
    "QueueClosed",
    "QueueError",
    "QueueFull",
    "UndecodablePayload",
    "open_queue",
    "put_message",
    "put_messages",
    "read_messages",
]


def open_queue(spec: InProcessQueueSpec | RedisQueueSpec) -> Queue:
    """The queue a run spec's `queue` section describes (Redis is imported only when used)."""
    if isinstance(spec, InProcessQueueSpec):
        return InProcessQueue(max_size=spec.max_size)
    if isinstance(spec, RedisQueueSpec):
        # deferred: optional (redis, the serve extra)
        from skillfactory.queue.redis_streams import RedisStreamsQueue

        return RedisStreamsQueue.from_spec(spec)
    raise TypeError(f"unknown queue spec {type(spec).__name__}")
