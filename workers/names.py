"""Celery task and queue names: the only part of the workers that producers may import.

Producers enqueue by name (``send_task``), so they never import worker code and a producer can
run on a machine without the workers' dependencies. The one header every job message carries
beyond Celery's own (its publish time) is named here too, as both sides of the queue use it.
"""

import time

SYNC_TASK = "crosslink.sync.task"
PROBE_LINK = "crosslink.link.probe"
SYNC_QUEUE = "crosslink.sync"
# Celery's message has no publish time, so every job carries one (unix seconds) in this header:
# `crosslink health worker` reads the oldest queued message's to tell how long it has waited.
ENQUEUED_AT_HEADER = "crosslink_enqueued_at"
# The reconciliation poller (producers/tasks.py): beat sends the tick, the tick one poll per link side.
RECONCILE_TICK = "crosslink.reconcile.tick"
RECONCILE_POLL = "crosslink.reconcile.poll"

# The coalescing flag shared by the producer and the sync job: set when a job for
# (link, side, task) is queued, cleared when that job starts. While it is set, further events
# for the task enqueue nothing; one arriving during a run sets it again and queues one more run.
PENDING_KEY = "crosslink:pending:{link}:{side}:{task}"


def pending_key(link: str, side: str, task: int) -> str:
    return PENDING_KEY.format(link=link, side=side, task=task)


# The per-task lock key: a sync run holds its task's (and its counterpart's) while it works; the
# backfill takes both tasks' before pairing them, so neither can race a live sync's create.
LOCK_KEY = "crosslink:lock:{link}:{side}:{task}"


def lock_key(link: str, side: str, task: int) -> str:
    return LOCK_KEY.format(link=link, side=side, task=task)


def stamp_enqueue_time(headers: dict | None = None, **_: object) -> None:
    """Celery's before_task_publish receiver: write the publish time into the message headers.

    Connected (with STAMP_RECEIVER_UID, so only once) by every process that publishes jobs: the
    producer's Enqueuer, the worker app (retries, probes, polls) and the CLI through the Enqueuer's
    Celery app.
    """
    if headers is not None:
        headers[ENQUEUED_AT_HEADER] = time.time()


STAMP_RECEIVER_UID = "crosslink.stamp_enqueue_time"
