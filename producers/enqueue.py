"""The one way a producer queues a sync job: coalesced per (link, side, task), by task name.

The flag in ``workers.names.pending_key`` is set with NX; only the event that sets it sends a
job, and the job clears it when it starts, so events arriving during a run queue exactly one
more run afterwards.

Each event also leaves a hint of what it was (``workers.names.hints_key``): the job reads only
what its events point at (a comment event needs no task read, a field edit no comment list).
The hint is pushed in the same MULTI that sets the flag, and the job takes the hints in the same
MULTI that clears it, so a hint is always seen by the job that runs after it.

Bursts: a person saving a task again and again, or Planfix sending a scenario's backlog one
request after another, would cost one run (a read and a write) per event, since a run takes
milliseconds. So an event for a task that had one within HOT_WINDOW_MS queues its job
COALESCE_DELAY_S late: the rest of the burst joins that job, and the burst costs two runs. A
lone change (the common case) is queued at once.
"""

from __future__ import annotations

import redis
from celery import Celery
from celery.signals import before_task_publish

from workers.names import (
    FULL_HINT, STAMP_RECEIVER_UID, SYNC_QUEUE, SYNC_TASK, hints_key, pending_key, recent_key,
    stamp_enqueue_time,
)

# The pending flag must not outlive a lost job for long: after this, a new event queues again.
PENDING_TTL_S = 900
# Two events for one task this close together are a burst (people rarely save twice within it;
# a scenario backlog does).
HOT_WINDOW_MS = 500
# How long the job of a burst's second event waits for the rest of the burst to join it.
COALESCE_DELAY_S = 0.5

before_task_publish.connect(stamp_enqueue_time, weak=False, dispatch_uid=STAMP_RECEIVER_UID)


def make_celery(redis_url: str) -> Celery:
    """A Celery app used only to send tasks by name."""
    app = Celery("crosslink-producer", broker=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)
    return app


class Enqueuer:
    def __init__(self, redis_url: str):
        self.redis = redis.Redis.from_url(redis_url)
        self.celery = make_celery(redis_url)

    def sync(self, link: str, side: str, task: int, hint: str = FULL_HINT,
             job_id: str | None = None) -> bool:
        """Queue a sync of SIDE's TASK unless one is already waiting; True if queued. HINT says
        what changed (workers.names.event_hint); callers that do not know ask for a full look.
        JOB_ID, when given, is the Celery task id the job gets (the producer logs it, so an
        event can be followed into the worker's log lines)."""
        flag, hints = pending_key(link, side, task), hints_key(link, side, task)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(hints, hint)
        pipe.expire(hints, PENDING_TTL_S)
        pipe.set(recent_key(link, side, task), "1", px=HOT_WINDOW_MS, get=True)
        pipe.set(flag, "1", nx=True, ex=PENDING_TTL_S)
        *_, hot, queued = pipe.execute()
        if not queued:
            return False
        try:
            self.celery.send_task(SYNC_TASK, args=[link, side, task], queue=SYNC_QUEUE, task_id=job_id,
                                  countdown=COALESCE_DELAY_S if hot else None)
        except Exception:
            # No job went out: a flag left behind would swallow this task's events (and the
            # sender's retry of this one) until it expired. Best effort: Redis may be the failure.
            try:
                self.redis.delete(flag)
            except redis.RedisError:
                pass
            raise
        return True

    def close(self) -> None:
        self.redis.close()
        self.celery.close()
