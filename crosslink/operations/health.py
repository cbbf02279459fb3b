"""The health of the worker side and of the producer: what `crosslink health` reports to compose.

A process that runs is not a process that works. A worker is healthy when Redis answers, its
heartbeat (workers/heartbeat.py) is fresh, and the oldest job waiting on the sync queue has not
waited too long; the last catches workers that beat but take nothing (all slots stuck, wrong
queue). The producer is healthy when its /readyz says it can queue webhooks. Each check returns
a JSON-able report whose `healthy` is the verdict; `crosslink health` (crosslink/cli/health.py)
prints it as one JSON line and exits 0 (healthy) or 1, which is all an orchestrator reads.

The queue's age comes from the header every job carries (crosslink.queue.names.ENQUEUED_AT_HEADER):
kombu's Redis transport LPUSHes messages and workers BRPOP them, so the oldest waiting job is the
list's last item. Jobs a worker has taken (running, or waiting for the limiter with a countdown)
are not on the list, so a busy but keeping-up pipeline shows a young queue.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import redis

from crosslink.base.settings import get_settings
from crosslink.queue.enqueue import PENDING_TTL_S
from crosslink.queue.inspect import last_beats, oldest_job_age
from crosslink.queue.names import HEARTBEAT_MAX_AGE_S, SYNC_QUEUE

# A job waiting longer than its task's pending flag lives has lost its coalescing (new events
# for the task queue again): no worker is taking jobs, or far too few.
OLDEST_JOB_MAX_AGE_S = float(PENDING_TTL_S)
# Compose kills a health check after its own timeout (30 s by default): answer well inside it.
REDIS_TIMEOUT_S = 3.0
PRODUCER_TIMEOUT_S = 5.0


def worker_health(client: redis.Redis, *, node: str | None = None,
                  max_heartbeat_age_s: float = HEARTBEAT_MAX_AGE_S,
                  max_job_age_s: float = OLDEST_JOB_MAX_AGE_S, now: float | None = None) -> dict[str, Any]:
    """The worker side's health as one JSON-able dict; `healthy` is the verdict.

    NODE names one worker ("w1@host"); without it the freshest beat of any worker counts.
    """
    now = time.time() if now is None else now
    report: dict[str, Any] = {"healthy": False, "redis": "ok", "worker": node, "heartbeat_age_s": None,
                              "max_heartbeat_age_s": max_heartbeat_age_s, "queue": SYNC_QUEUE,
                              "queued_jobs": None, "oldest_job_age_s": None,
                              "max_job_age_s": max_job_age_s, "problems": []}
    problems: list[str] = report["problems"]
    try:
        client.ping()
        beats = last_beats(client)
        waiting, job_age = oldest_job_age(client, now)
    except redis.RedisError as exc:
        report["redis"] = "unreachable"
        problems.append(f"Redis unreachable ({type(exc).__name__})")
        return report
    if node is not None:
        beats = {node: beats[node]} if node in beats else {}
    if beats:
        newest, at = max(beats.items(), key=lambda item: item[1])
        report["worker"] = newest
        report["heartbeat_age_s"] = round(max(0.0, now - at), 1)
        if now - at > max_heartbeat_age_s:
            problems.append(f"worker {newest} last beat {now - at:.0f} s ago (over {max_heartbeat_age_s:g} s)")
    else:
        problems.append(f"no heartbeat from {'worker ' + node if node else 'any worker'}")
    report["queued_jobs"] = waiting
    if job_age is not None:
        report["oldest_job_age_s"] = round(job_age, 1)
        if job_age > max_job_age_s:
            problems.append(f"the oldest of {waiting} queued jobs has waited {job_age:.0f} s "
                            f"(over {max_job_age_s:g} s)")
    report["healthy"] = not problems
    return report


def producer_health(url: str, timeout_s: float = PRODUCER_TIMEOUT_S) -> dict[str, Any]:
    """GET URL/readyz: healthy on 200 {"status": "ready"}."""
    report: dict[str, Any] = {"healthy": False, "url": url, "http_status": None, "status": None}
    try:
        response = httpx.get(url.rstrip("/") + "/readyz", timeout=timeout_s)
    except httpx.HTTPError as exc:
        report["status"] = f"unreachable ({type(exc).__name__})"
        return report
    report["http_status"] = response.status_code
    try:
        report["status"] = response.json().get("status")
    except (ValueError, AttributeError):
        report["status"] = "answer is not JSON"
    report["healthy"] = response.status_code == 200 and report["status"] == "ready"
    return report


def default_producer_url() -> str:
    """Where this machine reaches the producer: its configured port, on loopback when it listens
    on every interface."""
    settings = get_settings()
    host = settings.producer_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.producer_port}"


def check_worker(node: str | None = None, max_heartbeat_age_s: float = HEARTBEAT_MAX_AGE_S,
                 max_job_age_s: float = OLDEST_JOB_MAX_AGE_S) -> dict[str, Any]:
    """worker_health against the configured Redis, asked with a deadline inside compose's."""
    client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                  socket_connect_timeout=REDIS_TIMEOUT_S)
    try:
        return worker_health(client, node=node, max_heartbeat_age_s=max_heartbeat_age_s,
                             max_job_age_s=max_job_age_s)
    finally:
        client.close()


def check_producer(url: str | None = None) -> dict[str, Any]:
    """producer_health at URL, else where this machine reaches the configured producer."""
    return producer_health(url or default_producer_url())
