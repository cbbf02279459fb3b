"""Each Celery worker writes a heartbeat into Redis, so a health check can ask whether it lives.

A docker-compose health check (`crosslink health worker`) must tell a worker that consumes from
one that hangs or is gone. Celery's own heartbeats are events on the broker, seen only by a live
event consumer (flower), so nothing can ask for them afterwards. So the worker's main process, on
Celery's `heartbeat_sent` signal (every 2 s, from its event loop), records its node name and the
time in one sorted set: one ZADD and one prune per beat, nothing else. `worker_ready` writes the
first beat at once; a clean shutdown removes the worker's entry, so a stopped worker is missed at
once, and a killed one ages out.

The key is the queue contract's (crosslink.queue.names.HEARTBEAT_KEY), read by
crosslink.queue.inspect.last_beats: the health check and the producer's metrics read it without
importing the worker.

Assumption: the worker and the health check read the same clock (one host, or NTP-synced
hosts); ages are time.time() differences.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.signals import heartbeat_sent, worker_ready, worker_shutdown

from crosslink.base.settings import get_settings
from crosslink.queue.names import HEARTBEAT_KEY

log = logging.getLogger("crosslink.worker")

# Entries of workers gone this long are dropped: container hostnames change with every deploy.
FORGET_AFTER_S = 86_400
# A beat is written from the worker's event loop: a slow or dead Redis must not hold it long.
REDIS_TIMEOUT_S = 1.0

_client: redis.Redis | None = None
_failing = False


def record_beat(client: redis.Redis, node: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zadd(HEARTBEAT_KEY, {node: now})
    pipe.zremrangebyscore(HEARTBEAT_KEY, "-inf", now - FORGET_AFTER_S)
    pipe.execute()


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                       socket_connect_timeout=REDIS_TIMEOUT_S)
    return _client


def _beat(node: str) -> None:
    """Record NODE's beat; a failure is logged once per outage (the beat's age then tells)."""
    global _failing
    try:
        record_beat(_redis(), node)
    except redis.RedisError as exc:
        if not _failing:
            log.warning("worker heartbeat not recorded, Redis unavailable: %s", type(exc).__name__)
        _failing = True
        return
    if _failing:
        log.info("worker heartbeat recorded again")
    _failing = False


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    _beat(sender.hostname)


@heartbeat_sent.connect
def _on_heartbeat(sender: Any = None, **_: Any) -> None:
    _beat(sender.eventer.hostname)


@worker_shutdown.connect
def _on_shutdown(sender: Any = None, **_: Any) -> None:
    try:
        _redis().zrem(HEARTBEAT_KEY, sender.hostname)
    except redis.RedisError:
        pass  # the entry ages out instead
