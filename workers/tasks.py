"""Celery tasks: each hands its job to a runner, inside a Redis-outage guard.

`sync_task` syncs one task (a burst's, a re-queued run, a replay: workers.runner), `sync_batch` the
tasks its link side's lone events left waiting (workers.batch), `probe_link` a severed link's
access (workers.runner.probe), `anchor_link_task` a link's journal head posted in both accounts
(workers.anchors). Every task is named explicitly, acks late and returns nothing
anyone waits for; the runners it calls are what tests call directly. A job whose runner sent its
own next run (it waits: workers.continuation) ends in Celery's RETRY state, so that it stays one
job, one row in Flower.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from celery import Task
from celery.exceptions import Reject

from crosslink.queue.names import ANCHOR_LINK, PROBE_LINK, SYNC_BATCH, SYNC_TASK
from workers import telemetry
from workers.anchors import anchor_job
from workers.app import app
from workers.batch import sync_side
from workers.continuation import finish_job
from workers.hints import Hints
from workers.runner import probe, sync_one
from workers.runtime import runtime

log = logging.getLogger("crosslink.worker")

# A Redis restart (AOF reload included) takes seconds; a job waits this long for it in its slot,
# since no job can make progress without Redis anyway.
REDIS_OUTAGE_WAIT_S = 30.0
REDIS_PING_EVERY_S = 0.5


# Celery's own retry limit (3 by default) does not apply: our runners decide when a job gives up
# (workers.retry), and a job that waits for its turn may continue as itself many times.
@app.task(name=SYNC_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def sync_task(self: Task, link_name: str, side: str, number: int, attempt: int = 0,
              hints: list[str] | None = None) -> str:
    carried = Hints.parse(hints) if hints else None

    def run() -> str:
        with redis_outage_guard({"link": link_name, "side": side, "task": number}):
            with telemetry.sync_run(link_name, side, number):
                return sync_one(link_name, side, number, attempt, carried)
    return finish_job(self, run)


@app.task(name=SYNC_BATCH, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def sync_batch(self: Task, link_name: str, side: str) -> str:
    """Sync the tasks waiting in SIDE's dirty set (workers.batch). Runs this job had begun when
    Redis went away keep their claims, which lapse, and the next batch job takes them up with a
    full look."""
    def run() -> str:
        with redis_outage_guard({"link": link_name, "side": side}):
            return sync_side(link_name, side, self.request.id or "")
    return finish_job(self, run)


@app.task(name=PROBE_LINK, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def probe_link(self: Task, link_name: str) -> str:
    """Check a severed link's access; when every side answers, resume from the parked events."""
    return finish_job(self, lambda: probe(link_name))


@app.task(name=ANCHOR_LINK, bind=True, acks_late=True, ignore_result=True)
def anchor_link_task(self: Task, link_name: str | None, reason: str, attempt: int = 0) -> str:
    """Post LINK_NAME's journal head (None: every link's) in both accounts, for REASON."""
    with redis_outage_guard({"link": link_name or "*"}):
        return anchor_job(link_name, reason, attempt)


@contextmanager
def redis_outage_guard(context: dict) -> Iterator[None]:
    """Redis is the broker, the registry and the leases: without it nothing can be decided, and
    acking (what Celery does with a failed task) would lose the event. Wait for it to come back,
    then hand the message back to the queue. If it stays away, the broker cannot take the
    rejection either, and redelivers after its visibility timeout."""
    try:
        yield
    except redis.RedisError as exc:
        log.warning("Redis unavailable (%s): the job goes back to the queue", type(exc).__name__, extra=context)
        _wait_for_redis()
        raise Reject(f"Redis unavailable: {type(exc).__name__}", requeue=True) from exc


def _wait_for_redis() -> None:
    deadline = time.monotonic() + REDIS_OUTAGE_WAIT_S
    while time.monotonic() < deadline:
        try:
            if runtime().redis.ping():
                return
        except redis.RedisError:
            time.sleep(REDIS_PING_EVERY_S)
