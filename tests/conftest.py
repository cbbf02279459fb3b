"""Each boundary faked in one place: a private Redis for the session, the Planfix emulator
in-process and on loopback.

Redis is a real redis-server of our own on a free port (never the machine's 6379), flushed
before each test that asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from crosslink.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The private server's URL, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()
