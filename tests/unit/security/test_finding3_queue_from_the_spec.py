"""Issue 15, finding 3: the spec picks the Redis host and the secret. The serving learner ignores
a submitted spec's `queue` (its own configuration decides), and a Redis host that accepts and
never answers cannot wedge a caller: every command is bounded by connect and socket timeouts."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from skillfactory.queue.redis_streams import RedisStreamsQueue
from skillfactory.runspec import parse_run_spec
from skillfactory.serving.run_controller import RunController


def silent_server() -> tuple[socket.socket, int]:
    """A TCP server that accepts connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_a_redis_host_that_never_answers_times_out() -> None:
    listener, port = silent_server()
    try:
        queue = RedisStreamsQueue(f"redis://127.0.0.1:{port}/0", socket_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)timeout|timed out"):
            queue.put("prompts", b"x")
        assert time.monotonic() - started < 10
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)timeout|timed out"):
            queue.get("prompts", "samplers", "w", 1, block_s=None)
        assert time.monotonic() - started < 10
    finally:
        listener.close()


def test_the_serving_learner_ignores_the_queue_a_spec_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEARNER_SECRET", "s3cret")
    spec = parse_run_spec(
        {
            "name": "sneaky",
            "model": "smollm2-135m-instruct",
            "queue": {
                "type": "redis",
                "url": "redis://10.9.9.9:6379/0",
                "password_env": "LEARNER_SECRET",
            },
        }
    )
    controller = RunController(tmp_path / "state")  # not started: the run stays pending
    record = controller.submit(spec)
    assert record.spec["queue"] == {"type": "inprocess", "max_size": 1024}
    assert "LEARNER_SECRET" not in str(controller.get(record.run_id).spec)
