"""Bus fixtures: ``make_bus`` builds a bus of each backend (the conformance suite runs once per
backend); the Redis backend talks to a private ``redis-server`` on a free loopback port."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from agentir.bus.memory import InMemoryBus
from agentir.cluster.server import RedisServer, redis_server_path

NO_REDIS = "redis-server is not installed (apt-get install redis-server); the Redis bus tests need a real one"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the bus tests (each test uses its own key prefix)."""
    if redis_server_path() is None:
        pytest.skip(NO_REDIS)
    with RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_bus(backend: str, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``async with make_bus(**options) as bus``: a fresh bus of the parametrized backend."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""

    @contextlib.asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[Any]:
        if backend == "memory":
            async with InMemoryBus(**options) as bus:
                yield bus
        else:
            from agentir.bus.redis import RedisBus

            options.setdefault("visibility_timeout", 1.0)
            async with RedisBus(url, prefix=prefix, **options) as bus:
                yield bus

    return make
