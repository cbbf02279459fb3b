"""Celery tasks: thin wrappers that take the lock, run the sync, and turn failures into the
right kind of waiting.

- rate limited (our limiter or Planfix's): re-queued for the time the limiter names, never asleep
  in a worker slot;
- the task pair is locked by another run, or a write lease is held: re-queued shortly;
- transient (5xx, timeout): retried with jittered exponential back-off counted from real attempts;
- access lost (bad token, scope, user removed): the link side is *severed*, the event is parked,
  nothing is deleted anywhere, and a probe re-checks access and replays parked events;
- anything else permanent: kept with its reason in the link's dead-letter list.
"""

from __future__ import annotations

import logging
import random
import time

from celery import Task

from planfix.errors import RateLimited, TransientError
from workers.app import app
from workers.idempotency import LeaseBusy, TaskLock
from workers.names import PROBE_LINK, SYNC_QUEUE, SYNC_TASK, pending_key
from workers.runtime import runtime
from workers.sync import SideFailure, TaskSync

log = logging.getLogger("crosslink.worker")

# Back-off for transient failures: base doubles per attempt, capped far below the broker's
# visibility timeout (1 h) so a delayed retry is never redelivered twice.
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0
MAX_TRANSIENT_ATTEMPTS = 8
# Another run holds the task pair: it takes a few seconds at 1 request/s.
LOCK_RETRY_S = 1.0
# How often a severed link's access is checked again.
PROBE_INTERVAL_S = 30.0


def backoff_s(attempt: int, scale: float) -> float:
    """Full-jitter exponential back-off for the ATTEMPT-th retry (0-based)."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** attempt))
    return scale * random.uniform(ceiling / 2, ceiling)


def pair_lock_key(link: str, side: str, number: int, counterpart: int | None) -> str:
    """One lock per task pair, named after the partner side's task when it is known."""
    if side == "partner" or counterpart is None:
        return f"crosslink:lock:{link}:{side}:{number}"
    return f"crosslink:lock:{link}:partner:{counterpart}"


def requeue(link: str, side: str, number: int, delay_s: float, attempt: int = 0) -> None:
    app.send_task(SYNC_TASK, args=[link, side, number], kwargs={"attempt": attempt},
                  queue=SYNC_QUEUE, countdown=max(0.0, delay_s))


@app.task(name=SYNC_TASK, bind=True, acks_late=True, ignore_result=True)
def sync_task(self: Task, link_name: str, side: str, number: int, attempt: int = 0) -> str:
    rt = runtime()
    link = rt.link(link_name)
    state = rt.state(link_name)
    scale = rt.settings.time_scale
    context = {"link": link_name, "side": side, "task": number}
    if state.severed():
        state.park({"link": link_name, "side": side, "task": number, "at": time.time()})
        log.info("link severed: event parked", extra=context)
        return "parked"
    counterpart = state.counterpart("task", side, number)
    lock = TaskLock(rt.redis, pair_lock_key(link_name, side, number, counterpart))
    if not lock.acquire():
        requeue(link_name, side, number, LOCK_RETRY_S * scale, attempt)
        return "locked"
    try:
        # From here on, a new event for this task queues one more run after this one.
        rt.redis.delete(pending_key(link_name, side, number))
        clients = {name: rt.client(link, name) for name in link.sides}
        report = TaskSync(link, side, number, clients, state, rt.writes).run()
    except LeaseBusy:
        requeue(link_name, side, number, LOCK_RETRY_S * scale, attempt)
        return "lease-busy"
    except SideFailure as failure:
        return _handle_failure(link_name, side, number, attempt, failure, scale)
    finally:
        lock.release()
    state.mark_synced(time.time())
    for follow_side, follow_number in report.follow_up:
        requeue(link_name, follow_side, follow_number, 0.0)
    log.info("synced: %s", report.summary(), extra={**context, "counterpart": report.counterpart})
    return report.outcome


def _handle_failure(link_name: str, side: str, number: int, attempt: int, failure: SideFailure,
                    scale: float) -> str:
    rt = runtime()
    state = rt.state(link_name)
    error = failure.error
    context = {"link": link_name, "side": side, "task": number}
    if isinstance(error, RateLimited):
        requeue(link_name, side, number, error.retry_after_ms / 1000.0, attempt)
        return "rate-limited"
    if isinstance(error, TransientError):
        if attempt + 1 < MAX_TRANSIENT_ATTEMPTS:
            delay = backoff_s(attempt, scale)
            log.warning("transient failure on %s, retry in %.1fs: %s", failure.side, delay, error, extra=context)
            requeue(link_name, side, number, delay, attempt + 1)
            return "retrying"
        _dead_letter(link_name, side, number, f"gave up after {attempt + 1} attempts: {error}")
        return "dead"
    if getattr(error, "severs_link", False):
        if state.sever(failure.side, str(error), time.time()):
            log.error("link side %s severed: %s; events are parked, nothing is deleted",
                      failure.side, error, extra=context)
            app.send_task(PROBE_LINK, args=[link_name], queue=SYNC_QUEUE,
                          countdown=PROBE_INTERVAL_S * scale)
        state.park({"link": link_name, "side": side, "task": number, "at": time.time()})
        return "parked"
    _dead_letter(link_name, side, number, str(error))
    return "dead"


def _dead_letter(link_name: str, side: str, number: int, reason: str) -> None:
    event = {"link": link_name, "side": side, "task": number}
    runtime().state(link_name).dead_letter(event, reason, time.time())
    log.error("dead letter: %s", reason, extra={"link": link_name, "side": side, "task": number})


@app.task(name=PROBE_LINK, bind=True, acks_late=True, ignore_result=True)
def probe_link(self: Task, link_name: str) -> str:
    """Check a severed link's access; when every side answers, resume from the parked events."""
    rt = runtime()
    link = rt.link(link_name)
    state = rt.state(link_name)
    severed = state.severed()
    if not severed:
        return "healthy"
    for side in list(severed):
        try:
            rt.client(link, side).ping()
        except RateLimited as exc:
            app.send_task(PROBE_LINK, args=[link_name], queue=SYNC_QUEUE, countdown=exc.retry_after_ms / 1000)
            return "rate-limited"
        except Exception as exc:  # noqa: BLE001 - any failure means access is still lost
            log.info("link side %s still severed: %s", side, exc, extra={"link": link_name, "side": side})
            app.send_task(PROBE_LINK, args=[link_name], queue=SYNC_QUEUE,
                          countdown=PROBE_INTERVAL_S * rt.settings.time_scale)
            return "severed"
        state.restore(side)
    replayed = set()
    for event in state.take_parked():
        key = (event["side"], int(event["task"]))
        if key not in replayed:
            replayed.add(key)
            requeue(link_name, event["side"], int(event["task"]), 0.0)
    log.info("link access restored: replaying %d parked tasks", len(replayed), extra={"link": link_name})
    return "restored"
