"""Redis Streams backend against a real redis-server: trimming, auth, crashes of consumers and of
the server itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from skillfactory.queue import open_queue, put_message, read_messages
from skillfactory.runspec import RedisQueueSpec
from skillfactory.v1 import data_pb2

if TYPE_CHECKING:
    from skillfactory.queue.redis_streams import RedisStreamsQueue

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not on PATH (apt install redis-server)",
)


def redis_queue(url: str, max_len: int = 100_000) -> RedisStreamsQueue:
    from skillfactory.queue.redis_streams import RedisStreamsQueue

    return RedisStreamsQueue(url, stream_prefix=f"test-{uuid.uuid4().hex[:8]}", max_len=max_len)


def test_open_queue_uses_the_spec_and_its_password_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from skillfactory.queue.redis_server import RedisServer
    from skillfactory.queue.redis_streams import RedisStreamsQueue

    with RedisServer(tmp_path, password="hunter2-queue") as server:
        spec = RedisQueueSpec(url=server.url, password_env="SF_TEST_REDIS_PW", stream_prefix="run7")
        monkeypatch.delenv("SF_TEST_REDIS_PW", raising=False)
        refused = open_queue(spec)
        with pytest.raises(redis.AuthenticationError):
            refused.put("groups", b"x")
        refused.close()

        monkeypatch.setenv("SF_TEST_REDIS_PW", "hunter2-queue")
        queue = open_queue(spec)
        assert isinstance(queue, RedisStreamsQueue)
        entry_id = queue.put("groups", b"x")
        assert queue.client.xlen("run7:groups") == 1  # key = f"{stream_prefix}:{stream}"
        assert [e.id for e in queue.get("groups", "g", "c")] == [entry_id]
        queue.close()


def test_stream_length_is_bounded(redis_url: str) -> None:
    queue = redis_queue(redis_url, max_len=200)
    for i in range(3000):
        queue.put("s", b"%d" % i)
    length = queue.client.xlen(queue.key("s"))
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default): a little over max_len.
    assert 200 <= length <= 300
    entries = queue.get("s", "g", "c", count=10_000)
    assert entries[-1].payload == b"2999"
    assert len(entries) == length
    queue.close()


def test_trimmed_pending_entries_are_counted_as_lost(redis_url: str) -> None:
    queue = redis_queue(redis_url, max_len=100)
    for i in range(100):
        queue.put("s", b"%d" % i)
    queue.get("s", "g", "dead", count=100)
    for i in range(1000):  # producers run far ahead: the dead consumer's entries are trimmed
        queue.put("s", b"new %d" % i)
    assert queue.reclaim("s", "g", "alive", min_idle_s=0) == []
    assert queue.lost == 100
    assert queue.pending("s", "g") == 0
    queue.close()


def test_depth_falls_back_to_counting_when_lag_is_unknown(redis_url: str) -> None:
    queue = redis_queue(redis_url)
    ids = [queue.put("s", b"%d" % i) for i in range(5)]
    queue.get("s", "g", "c", count=1)
    queue.client.xdel(queue.key("s"), ids[3])  # a deletion makes XINFO's lag nil
    info = queue.client.xinfo_groups(queue.key("s"))
    assert info[0]["lag"] is None
    assert queue.depth("s", "g") == 3
    queue.close()


# A consumer process: takes `take` entries, acks the first `ack` of them, reports, then hangs
# holding the rest until it is killed.
_DOOMED_CONSUMER = """
import json, sys, time
from skillfactory.queue.redis_streams import RedisStreamsQueue
url, prefix, take, ack = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
q = RedisStreamsQueue(url, stream_prefix=prefix)
entries = q.get("groups", "learner", "doomed", count=take, block_s=5)
q.ack("groups", "learner", [e.id for e in entries[:ack]])
print(json.dumps({"acked": [e.payload.decode() for e in entries[:ack]],
                  "held": [e.id for e in entries[ack:]]}), flush=True)
time.sleep(60)
"""


def test_killed_consumer_process_entries_are_reclaimed_and_acked_exactly_once(
    redis_url: str,
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    queue = redis_queue(redis_url)
    queue.stream_prefix = prefix
    n, take, acked_by_doomed = 60, 25, 5
    for i in range(n):
        queue.put("groups", f"group-{i}".encode())

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _DOOMED_CONSUMER,
            redis_url,
            prefix,
            str(take),
            str(acked_by_doomed),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        report = json.loads(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: no chance to ack or clean up
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(report["acked"]) == acked_by_doomed and len(report["held"]) == take - acked_by_doomed
    assert queue.pending("groups", "learner") == take - acked_by_doomed

    acks: Counter[str] = Counter(report["acked"])
    reclaimed_ids: list[str] = []
    time.sleep(0.3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = queue.reclaim("groups", "learner", "survivor", min_idle_s=0.25)
        reclaimed_ids += [e.id for e in entries]
        assert all(e.deliveries == 2 for e in entries)
        entries += queue.get("groups", "learner", "survivor", count=7)
        queue.ack("groups", "learner", [e.id for e in entries])
        acks.update(e.payload.decode() for e in entries)
        if not entries and queue.pending("groups", "learner") == 0:
            break
    assert sorted(reclaimed_ids) == sorted(report["held"])
    assert acks == Counter(f"group-{i}" for i in range(n))  # every entry, exactly once
    assert queue.pending("groups", "learner") == 0
    assert queue.depth("groups", "learner") == 0
    queue.close()


def test_entries_survive_a_redis_crash_with_aof(tmp_path: Path) -> None:
    from skillfactory.queue.redis_server import RedisServer
    from skillfactory.queue.redis_streams import RedisStreamsQueue

    sent = [
        data_pb2.Group(group_id=f"g{i}", completions=[data_pb2.Completion(token_ids=[i, i + 1])])
        for i in range(30)
    ]
    with RedisServer(tmp_path, appendonly=True, appendfsync="always") as server:
        queue = RedisStreamsQueue(server.url, stream_prefix="aof")
        ids = [put_message(queue, "groups", g) for g in sent]
        first = queue.get("groups", "learner", "c1", count=10)
        queue.ack("groups", "learner", [e.id for e in first[:4]])
        queue.close()

        server.restart(crash=True)  # SIGKILL: only what was fsynced survives
        assert (tmp_path / "appendonlydir").is_dir()

        queue = RedisStreamsQueue(server.url, stream_prefix="aof")
        assert queue.pending("groups", "learner") == 6
        assert queue.depth("groups", "learner") == 20
        held = queue.reclaim("groups", "learner", "c2", min_idle_s=0)
        rest = queue.get("groups", "learner", "c2", count=100)
        assert [e.id for e in held + rest] == ids[4:]
        assert [m for _, m in read_messages(held + rest, data_pb2.Group)] == sent[4:]
        assert [e.deliveries for e in held] == [2] * 6
        queue.close()


def test_without_aof_a_crash_loses_the_stream(tmp_path: Path) -> None:
    """The control for the AOF test: the same crash without persistence loses everything."""
    from skillfactory.queue.redis_server import RedisServer
    from skillfactory.queue.redis_streams import RedisStreamsQueue

    with RedisServer(tmp_path, appendonly=False) as server:
        queue = RedisStreamsQueue(server.url, stream_prefix="aof")
        queue.put("groups", b"x")
        queue.close()
        server.restart(crash=True)
        queue = RedisStreamsQueue(server.url, stream_prefix="aof")
        assert queue.depth("groups", "learner") == 0
        queue.close()


def test_redis_server_helper_reports_a_bad_start(tmp_path: Path) -> None:
    from skillfactory.queue.redis_server import RedisServer, RedisServerError

    with RedisServer(tmp_path / "a") as server:
        clash = RedisServer(tmp_path / "b", port=server.port, start_timeout_s=3)
        with pytest.raises(RedisServerError, match="did not start"):
            clash.start()
    with pytest.raises(ValueError):
        RedisServer(tmp_path, password='has"quote')
