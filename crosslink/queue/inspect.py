"""Read-only looks at the queue for people and probes: is work left, how old is the oldest job.

`crosslink status`, `crosslink health`, the metrics and the lab's waits ask these; they read the
keys the protocol spells in crosslink.queue.names and write nothing.
"""

from __future__ import annotations

import json

import redis

from crosslink.queue.names import ENQUEUED_AT_HEADER, SYNC_QUEUE, UNACKED_KEY, claims_key, pending_key


def work_waiting(client: redis.Redis, link: str = "*") -> bool:
    """Whether any sync work of LINK (every link by default) is left: jobs queued or running,
    a task whose run is pending, or tasks claimed by a batch job (one that died leaves them)."""
    if client.llen(SYNC_QUEUE) or client.hlen(UNACKED_KEY):
        return True
    return any(next(client.scan_iter(pattern, count=1000), None) is not None
               for pattern in (pending_key(link, "*", "*"), claims_key(link, "*")))


def oldest_job_age(client: redis.Redis, now: float, queue: str = SYNC_QUEUE) -> tuple[int, float | None]:
    """(jobs waiting on QUEUE, seconds the oldest has waited); None when none waits or its
    message carries no enqueue time (sent by an older Crosslink)."""
    waiting = int(client.llen(queue))
    raw = client.lindex(queue, -1) if waiting else None
    if raw is None:
        return waiting, None
    try:
        enqueued_at = float(json.loads(raw)["headers"][ENQUEUED_AT_HEADER])
    except (ValueError, KeyError, TypeError):
        return waiting, None
    return waiting, max(0.0, now - enqueued_at)
