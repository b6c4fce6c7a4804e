"""Queue fixtures: every backend behind one `queue` fixture, and a real redis-server per session."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest

from skillfactory.queue import InProcessQueue, Queue

BACKENDS = ["inprocess", "redis"]

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not on PATH (apt install redis-server)",
)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server started for this session on a free loopback port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH (apt install redis-server)")
    from skillfactory.queue.redis_server import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def make_queue(request: pytest.FixtureRequest) -> Iterator[Callable[..., Queue]]:
    """Factory for the parametrized backend: `make_queue(max_size=..., max_len=...)`."""
    backend: str = request.param
    made: list[Queue] = []
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    def make(max_size: int = 1024, max_len: int = 100_000, claim_idle_s: float = 60.0) -> Queue:
        q: Queue
        if backend == "inprocess":
            q = InProcessQueue(max_size=max_size, claim_idle_s=claim_idle_s)
        else:
            from skillfactory.queue.redis_streams import RedisStreamsQueue
            from skillfactory.runspec import RedisQueueSpec

            url = request.getfixturevalue("redis_url")
            spec = RedisQueueSpec(
                url=url,
                stream_prefix=prefix,
                max_len=max_len,
                claim_idle_ms=int(claim_idle_s * 1000),
            )
            q = RedisStreamsQueue.from_spec(spec)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


@pytest.fixture
def queue(make_queue: Callable[..., Queue]) -> Queue:
    return make_queue()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "make_queue" in metafunc.fixturenames:
        metafunc.parametrize("make_queue", BACKENDS, indirect=True)
