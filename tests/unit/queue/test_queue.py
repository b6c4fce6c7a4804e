"""Queue semantics, written once and run against every backend (in-process and a real Redis)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from skillfactory.queue import (
    Entry,
    InProcessQueue,
    Queue,
    QueueClosed,
    QueueFull,
    UndecodablePayload,
    put_message,
    read_messages,
)
from skillfactory.v1 import data_pb2

MakeQueue = Callable[..., Queue]


def make_group(i: int, n: int = 4, tokens: int = 8) -> data_pb2.Group:
    group = data_pb2.Group(run_id="run", group_id=f"g{i}", prompt=f"prompt {i}", policy_version=i)
    for j in range(n):
        group.completions.add(
            text=f"completion {j}",
            token_ids=list(range(j, j + tokens)),
            logprobs=[-0.5] * tokens,
            policy_version=i,
        )
        group.rewards.add(value=float(j % 2), correct=bool(j % 2))
    return group


def put_n(queue: Queue, n: int, stream: str = "s") -> list[str]:
    return [queue.put(stream, f"p{i}".encode()) for i in range(n)]


def payloads(entries: list[Entry]) -> list[bytes]:
    return [e.payload for e in entries]


def test_put_get_ack_round_trip_with_group_messages(make_queue: MakeQueue) -> None:
    queue = make_queue()
    sent = [make_group(i) for i in range(3)]
    ids = [put_message(queue, "groups", g) for g in sent]
    assert len(set(ids)) == 3
    assert queue.depth("groups", "learner") == 3

    entries = queue.get("groups", "learner", "c1", count=10)
    assert [e.id for e in entries] == ids
    assert all(e.deliveries == 1 for e in entries)
    received = read_messages(entries, data_pb2.Group)
    assert [m for _, m in received] == sent
    assert queue.pending("groups", "learner") == 3
    assert queue.depth("groups", "learner") == 0

    queue.ack("groups", "learner", ids)
    assert queue.pending("groups", "learner") == 0
    assert queue.get("groups", "learner", "c1", count=10) == []


def test_get_respects_count_and_order(make_queue: MakeQueue) -> None:
    queue = make_queue()
    ids = put_n(queue, 5)
    first = queue.get("s", "g", "c", count=2)
    rest = queue.get("s", "g", "c", count=10)
    assert [e.id for e in first + rest] == ids
    assert payloads(first) == [b"p0", b"p1"]


def test_get_blocks_until_a_put_or_the_timeout(make_queue: MakeQueue) -> None:
    queue = make_queue()
    t0 = time.monotonic()
    assert queue.get("s", "g", "c", block_s=0) == []
    assert queue.get("s", "g", "c", block_s=0.2) == []
    assert time.monotonic() - t0 >= 0.19

    timer = threading.Timer(0.2, lambda: queue.put("s", b"late"))
    timer.start()
    t0 = time.monotonic()
    entries = queue.get("s", "g", "c", block_s=5.0)
    timer.join()
    assert payloads(entries) == [b"late"]
    assert time.monotonic() - t0 < 3.0

    timer = threading.Timer(0.2, lambda: queue.put("s", b"forever"))
    timer.start()
    assert payloads(queue.get("s", "g", "c", block_s=None)) == [b"forever"]
    timer.join()


def test_two_consumers_in_one_group_split_the_entries(make_queue: MakeQueue) -> None:
    queue = make_queue()
    put_n(queue, 10)
    a = queue.get("s", "g", "a", count=4)
    b = queue.get("s", "g", "b", count=100)
    assert len(a) == 4 and len(b) == 6
    assert sorted(payloads(a) + payloads(b)) == sorted(f"p{i}".encode() for i in range(10))
    assert queue.get("s", "g", "a", count=100) == []


def test_two_groups_each_see_every_entry(make_queue: MakeQueue) -> None:
    queue = make_queue()
    ids = put_n(queue, 6)
    learner = queue.get("s", "learner", "c", count=100)
    queue.ack("s", "learner", [e.id for e in learner])
    logger = queue.get("s", "logger", "c", count=100)
    assert [e.id for e in learner] == ids
    assert [e.id for e in logger] == ids
    assert queue.pending("s", "learner") == 0
    assert queue.pending("s", "logger") == 6


def test_streams_are_independent(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put("prompts", b"x")
    assert queue.get("groups", "g", "c") == []
    assert payloads(queue.get("prompts", "g", "c")) == [b"x"]


def test_dead_consumer_entries_are_reclaimed_after_min_idle(make_queue: MakeQueue) -> None:
    queue = make_queue()
    put_n(queue, 5)
    held = queue.get("s", "g", "dead", count=5)
    assert len(held) == 5

    assert queue.reclaim("s", "g", "alive", min_idle_s=0.5) == []  # not idle long enough yet
    time.sleep(0.6)
    taken = queue.reclaim("s", "g", "alive", min_idle_s=0.5)
    assert [e.id for e in taken] == [e.id for e in held]
    assert payloads(taken) == payloads(held)
    assert all(e.deliveries == 2 for e in taken)
    assert queue.pending("s", "g") == 5
    # Now pending on "alive" with a fresh idle time: not taken again at once.
    assert queue.reclaim("s", "g", "other", min_idle_s=0.5) == []

    queue.ack("s", "g", [e.id for e in taken])
    assert queue.pending("s", "g") == 0
    assert queue.reclaim("s", "g", "other", min_idle_s=0) == []
    assert queue.get("s", "g", "other", count=10) == []


def test_reclaim_counts_deliveries_and_honours_count(make_queue: MakeQueue) -> None:
    queue = make_queue()
    put_n(queue, 4)
    queue.get("s", "g", "a", count=4)
    first = queue.reclaim("s", "g", "b", min_idle_s=0, count=3)
    assert len(first) == 3 and all(e.deliveries == 2 for e in first)
    again = queue.reclaim("s", "g", "c", min_idle_s=0, count=100)
    assert len(again) == 4
    assert sorted(e.deliveries for e in again) == [2, 3, 3, 3]


def test_reclaim_defaults_to_the_configured_idle(make_queue: MakeQueue) -> None:
    queue = make_queue(claim_idle_s=0.3)
    put_n(queue, 2)
    queue.get("s", "g", "dead", count=2)
    assert queue.reclaim("s", "g", "alive") == []
    time.sleep(0.4)
    assert len(queue.reclaim("s", "g", "alive")) == 2


def test_acked_entries_are_never_redelivered(make_queue: MakeQueue) -> None:
    queue = make_queue()
    put_n(queue, 4)
    entries = queue.get("s", "g", "a", count=4)
    queue.ack("s", "g", [entries[0].id, entries[2].id])
    queue.ack("s", "g", [entries[0].id])  # acking twice is harmless
    assert queue.pending("s", "g") == 2
    time.sleep(0.05)
    taken = queue.reclaim("s", "g", "b", min_idle_s=0)
    assert [e.id for e in taken] == [entries[1].id, entries[3].id]
    queue.ack("s", "g", [e.id for e in taken])
    assert queue.reclaim("s", "g", "b", min_idle_s=0) == []
    assert queue.get("s", "g", "b", count=10) == []
    assert queue.pending("s", "g") == 0


def test_depth_and_pending_track_the_group(make_queue: MakeQueue) -> None:
    queue = make_queue()
    assert queue.depth("s", "g") == 0 and queue.pending("s", "g") == 0
    put_n(queue, 7)
    assert queue.depth("s", "g") == 7
    got = queue.get("s", "g", "c", count=3)
    assert queue.depth("s", "g") == 4 and queue.pending("s", "g") == 3
    queue.ack("s", "g", [got[0].id])
    assert queue.depth("s", "g") == 4 and queue.pending("s", "g") == 2
    assert queue.depth("s", "other") == 7  # a new group starts from the beginning


def test_many_threads_every_entry_acked_exactly_once(make_queue: MakeQueue) -> None:
    queue = make_queue(max_size=16)
    n_producers, per_producer, n_consumers = 3, 100, 3
    acked: Counter[bytes] = Counter()
    lock = threading.Lock()
    done = threading.Event()

    def produce(p: int) -> None:
        for i in range(per_producer):
            queue.put("s", f"{p}:{i}".encode(), timeout=10)

    def consume(name: str) -> None:
        while not done.is_set():
            entries = queue.get("s", "g", name, count=8, block_s=0.05)
            with lock:
                acked.update(e.payload for e in entries)
            queue.ack("s", "g", [e.id for e in entries])

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(n_producers)]
    threads += [threading.Thread(target=consume, args=(f"c{c}",)) for c in range(n_consumers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while sum(acked.values()) < n_producers * per_producer and time.monotonic() < deadline:
        time.sleep(0.02)
    done.set()
    for t in threads:
        t.join(timeout=10)
    expected = {f"{p}:{i}".encode() for p in range(n_producers) for i in range(per_producer)}
    assert set(acked) == expected
    assert set(acked.values()) == {1}
    assert queue.pending("s", "g") == 0


def test_read_messages_names_undecodable_entries(make_queue: MakeQueue) -> None:
    queue = make_queue()
    put_message(queue, "s", make_group(0))
    bad_id = queue.put("s", b"\xff")
    put_message(queue, "s", make_group(2))
    entries = queue.get("s", "g", "c", count=10)
    with pytest.raises(UndecodablePayload, match=bad_id) as info:
        read_messages(entries, data_pb2.Group)
    assert [e.id for e in info.value.bad] == [bad_id]
    assert [m.group_id for _, m in info.value.good] == ["g0", "g2"]


def test_closed_queue_refuses_calls(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.close()
    with pytest.raises(QueueClosed):
        queue.put("s", b"x")
    with pytest.raises(QueueClosed):
        queue.get("s", "g", "c")


# -- in-process only -------------------------------------------------------------------------


def test_inprocess_put_raises_queue_full_after_timeout() -> None:
    queue = InProcessQueue(max_size=2)
    put_n(queue, 2)
    t0 = time.monotonic()
    with pytest.raises(QueueFull):
        queue.put("s", b"third", timeout=0.2)
    assert time.monotonic() - t0 >= 0.19
    with pytest.raises(QueueFull):
        queue.put("s", b"third", timeout=0)
    queue.put("other", b"another stream has room", timeout=0)


def test_inprocess_put_blocks_until_every_group_acks() -> None:
    queue = InProcessQueue(max_size=2)
    put_n(queue, 2)
    a = queue.get("s", "a", "c", count=2)
    b = queue.get("s", "b", "c", count=2)
    queue.ack("s", "a", [e.id for e in a])
    with pytest.raises(QueueFull):  # group b still holds them
        queue.put("s", b"x", timeout=0.1)

    put_done = threading.Event()

    def blocked_put() -> None:
        queue.put("s", b"x", timeout=None)
        put_done.set()

    thread = threading.Thread(target=blocked_put)
    thread.start()
    assert not put_done.wait(0.2)
    queue.ack("s", "b", [b[0].id])
    assert put_done.wait(2.0)
    thread.join()
    assert payloads(queue.get("s", "a", "c", count=10)) == [b"x"]


def test_inprocess_pending_entries_are_not_dropped_by_back_pressure() -> None:
    queue = InProcessQueue(max_size=2)
    put_n(queue, 2)
    queue.get("s", "g", "dead", count=2)
    with pytest.raises(QueueFull):
        queue.put("s", b"x", timeout=0.05)
    taken = queue.reclaim("s", "g", "alive", min_idle_s=0)
    assert payloads(taken) == [b"p0", b"p1"]


def test_inprocess_close_wakes_blocked_callers() -> None:
    queue = InProcessQueue(max_size=1)
    queue.put("s", b"x")
    errors: list[BaseException] = []

    def call(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:  # recorded for the assertion
            errors.append(e)

    threads = [
        threading.Thread(target=call, args=(lambda: queue.put("s", b"y", timeout=None),)),
        threading.Thread(target=call, args=(lambda: queue.get("t", "g", "c", block_s=None),)),
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)
    queue.close()
    for t in threads:
        t.join(timeout=2)
    assert len(errors) == 2 and all(isinstance(e, QueueClosed) for e in errors)
