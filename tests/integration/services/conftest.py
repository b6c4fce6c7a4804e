"""Real gRPC servers on 127.0.0.1 (port 0); records and clients are in `service_records`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from skillfactory.serving.reward import setup_reward_server
from skillfactory.serving.server import ServiceServer, ServingConfig


@pytest.fixture
def start_reward_server() -> Iterator[Callable[..., ServiceServer]]:
    """Starts reward servers with the given `ServingConfig` fields; stops them at the end."""
    servers: list[ServiceServer] = []

    def start(**fields: Any) -> ServiceServer:
        server = setup_reward_server(ServingConfig(**{"grace_s": 1.0, "linger_s": 0.0, **fields}))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_s=0)
