"""Read-only looks at the queue for people and probes: is work left, how old is the oldest job.

`crosslink status`, `crosslink health`, the producer's metrics, the lab's waits and `crosslink
backfill`'s wait for its mirroring ask these; they read the keys the protocol spells in
crosslink.queue.names and write nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from crosslink.queue.names import (
    ENQUEUED_AT_HEADER,
    HEARTBEAT_KEY,
    SYNC_QUEUE,
    UNACKED_KEY,
    claims_key,
    dirty_key,
    lock_key,
    pending_key,
    severed_key,
)


def work_waiting(client: redis.Redis, link: str = "*") -> bool:
    """Whether any sync work of LINK (every link by default) is left: jobs queued or running,
    a task whose run is pending, or tasks claimed by a batch job (one that died leaves them)."""
    if client.llen(SYNC_QUEUE) or client.hlen(UNACKED_KEY):
        return True
    return any(next(client.scan_iter(pattern, count=1000), None) is not None
               for pattern in (pending_key(link, "*", "*"), claims_key(link, "*")))


def runs_in_flight(client: redis.Redis, link: str, tasks: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of LINK's TASKS ((side, number), each queued for a sync run) still have their run
    ahead or under way: the pending flag stands (from the event until its run begins, as the
    begin step takes the lock and clears the flag in one step), the task waits in its side's
    dirty set or is claimed by a batch job, or its run holds its lock. A task in none of these
    has had its run since it was queued.

    Assumes nothing else queued it again by a plain job with no flag: a run's retry after a
    transient failure, or a follow-up run, waits in the Celery queue unseen here
    (work_waiting sees it, for the link as a whole)."""
    tasks = list(tasks)
    pipe = client.pipeline(transaction=False)
    for side, number in tasks:
        pipe.exists(pending_key(link, side, number))
        pipe.zscore(dirty_key(link, side), number)
        pipe.hexists(claims_key(link, side), number)
        pipe.exists(lock_key(link, side, number))
    looks = pipe.execute()
    return {task for index, task in enumerate(tasks)
            if any(value not in (0, None, False) for value in looks[index * 4:index * 4 + 4])}


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


def last_beats(client: redis.Redis) -> dict[str, float]:
    """Every worker's latest beat (workers.heartbeat writes them): node name -> unix time."""
    return {(node.decode() if isinstance(node, bytes) else node): float(at)
            for node, at in client.zrange(HEARTBEAT_KEY, 0, -1, withscores=True)}


def severed_sides(client: redis.Redis, link: str) -> set[str]:
    """The sides of LINK whose access is lost (crosslink.queue.names.SEVERED_KEY)."""
    return {side.decode() if isinstance(side, bytes) else side for side in client.hkeys(severed_key(link))}


def oldest_change_age(client: redis.Redis, link: str, sides: Iterable[str], now: float) -> float:
    """Seconds the oldest change waiting among LINK's SIDES' tasks (their dirty sets,
    crosslink.queue.names.DIRTY_KEY) has been due with no batch job claiming it; 0 when none waits.

    A dirty set's score is when its task is due (a task held for coalescing is due later, and is
    not late before then) and keeps the earliest event's place, so a backlog shows here as it
    grows. Not counted: a burst's task, whose job of its own waits on the Celery queue
    (crosslink_queue_oldest_job_age_seconds), and the pending flags' own times, which the poller's
    recovery resets. Assumes the producer's clock and Redis's agree (one host, or NTP)."""
    pipe = client.pipeline(transaction=False)
    for side in sides:
        pipe.zrange(dirty_key(link, side), 0, 0, withscores=True)
    due_ms = [float(first[0][1]) for first in pipe.execute() if first]
    return max(0.0, now - min(due_ms) / 1000) if due_ms else 0.0
