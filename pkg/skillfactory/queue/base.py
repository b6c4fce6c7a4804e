"""The queue interface every backend implements, and protobuf helpers over it.

A queue holds named *streams* of entries (serialized protobuf payloads). Readers belong to
*consumer groups*: each group sees every entry of the stream once, split between the group's
consumers. A delivered entry stays *pending* on its consumer until it is acknowledged; if the
consumer dies, another consumer of the group *reclaims* it after it has been idle long enough, so
no entry is lost. Semantics follow Redis Streams (XADD / XREADGROUP / XACK / XAUTOCLAIM), which the
in-process queue reproduces:

- groups are created on demand, starting from the beginning of the stream;
- `get` returns only entries never delivered to the group (Redis `>`), first delivery = 1;
- `reclaim` takes over entries pending on *any* consumer of the group (itself included) for at
  least `min_idle_s`, and counts one more delivery for each;
- `ack` of an id that is not pending in the group is a no-op; an acked entry is never delivered to
  that group again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from google.protobuf.message import DecodeError, Message


@dataclass(frozen=True)
class Entry:
    """One delivered stream entry."""

    id: str
    """Stream entry id (`<ms>-<seq>`, increasing within a stream)."""
    payload: bytes
    """Serialized protobuf message."""
    deliveries: int
    """1 on first delivery, more after reclaims."""


class QueueError(RuntimeError):
    """Base class of queue errors."""


class QueueFull(QueueError):
    """`put` waited `timeout` seconds and the stream was still full."""


class QueueClosed(QueueError):
    """The queue was closed (before or while waiting)."""


class UndecodablePayload(QueueError):
    """Some entries did not parse as the expected message.

    `bad` holds those entries (e.g. to ack them away as poison), `good` the (entry, message) pairs
    that did parse, in order; the message names every bad entry id.
    """

    def __init__(
        self, message_cls: type[Message], bad: list[Entry], good: list[tuple[Entry, Message]]
    ) -> None:
        ids = ", ".join(e.id for e in bad)
        super().__init__(
            f"{len(bad)} queue entr{'y' if len(bad) == 1 else 'ies'} did not parse as "
            f"{message_cls.DESCRIPTOR.full_name}: {ids}"
        )
        self.bad = bad
        self.good = good


@runtime_checkable
class Queue(Protocol):
    """Streams of entries read by consumer groups (see the module docstring)."""

    def put(self, stream: str, payload: bytes, timeout: float | None = None) -> str:
        """Append `payload` to `stream`; return its entry id.

        The in-process queue waits while the stream is full (`max_size`): `timeout` None waits for
        ever, otherwise `QueueFull` is raised after `timeout` seconds. Redis never waits; it trims
        the oldest entries beyond about `max_len`.
        """
        ...

    def put_many(self, stream: str, payloads: Sequence[bytes]) -> list[str]:
        """Append `payloads` to `stream` in order, in one round trip where the backend can;
        return their entry ids."""
        ...

    def get(
        self, stream: str, group: str, consumer: str, count: int = 1, block_s: float | None = 0.0
    ) -> list[Entry]:
        """Up to `count` entries never delivered to `group`, now pending on `consumer`.

        `block_s` 0 returns at once (maybe empty), None waits until there is one, otherwise waits
        at most `block_s` seconds.
        """
        ...

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        """Mark entries done for `group`: they are never delivered to it again."""
        ...

    def reclaim(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle_s: float | None = None,
        count: int = 100,
    ) -> list[Entry]:
        """Take over up to `count` entries pending in `group` for at least `min_idle_s`.

        None takes the queue's default (`claim_idle_ms` of the Redis spec). Each returned entry
        counts one more delivery and is now pending on `consumer`.
        """
        ...

    def pending(self, stream: str, group: str) -> int:
        """Entries delivered to `group` and not yet acked."""
        ...

    def depth(self, stream: str, group: str) -> int:
        """Entries not yet delivered to `group` (its lag)."""
        ...

    def close(self) -> None:
        """Release resources; later calls raise `QueueClosed`."""
        ...


M = TypeVar("M", bound=Message)


def put_message(queue: Queue, stream: str, message: Message, timeout: float | None = None) -> str:
    """Serialize a protobuf message and put it on `stream`; return the entry id."""
    return queue.put(stream, message.SerializeToString(), timeout=timeout)


def put_messages(queue: Queue, stream: str, messages: Sequence[Message]) -> list[str]:
    """Serialize protobuf messages and put them on `stream` together; return the entry ids."""
    return queue.put_many(stream, [m.SerializeToString() for m in messages])


def read_messages(entries: Iterable[Entry], message_cls: type[M]) -> list[tuple[Entry, M]]:
    """Parse each entry's payload as `message_cls`, keeping entries and order.

    Raises `UndecodablePayload` if any payload does not parse; the exception names every bad entry
    id and carries both the bad entries and the parsed good ones, so a consumer can ack the poison
    entries and go on with the rest.
    """
    good: list[tuple[Entry, M]] = []
    bad: list[Entry] = []
    for entry in entries:
        message = message_cls()
        try:
            message.ParseFromString(entry.payload)
        except DecodeError:
            bad.append(entry)
            continue
        good.append((entry, message))
    if bad:
        raise UndecodablePayload(message_cls, bad, list(good))
    return good
