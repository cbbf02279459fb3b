"""Celery tasks: thin wrappers that take the lock, run the sync, and turn failures into the
right kind of waiting, as the retry policy (workers.retry) decides:

- rate limited (our limiter or Planfix's): re-queued for the time the limiter names, never asleep
  in a worker slot;
- the task pair is locked by another run, or a write lease is held: re-queued shortly;
- transient (5xx, timeout): retried with jittered exponential back-off counted from real attempts;
- a write Planfix queued (202): the same task is re-queued to read it back and plan again;
- access lost (bad token, scope, user removed): the link side is *severed*, the event is parked,
  nothing is deleted anywhere, and a probe re-checks access and replays parked events;
- Redis unreachable (a restart): the job waits for it, then goes back to the queue unacked;
- anything else permanent: a dead letter with its reason (workers.dead_letters); until it is
  replayed or dropped (`crosslink dlq`), later events for the same task wait behind it in order.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import Task
from celery.exceptions import Reject

from planfix.errors import Queued, RateLimited, TransientError
from schemas.links import Link
from workers.app import app
from workers.dead_letters import DeadLetters
from workers.idempotency import MIN_TASK_LOCK_TTL_MS, TASK_LOCK_TTL_MS, LeaseBusy, TaskLock, scaled_ttl_ms
from workers.names import PROBE_LINK, SYNC_QUEUE, SYNC_TASK, lock_key, pending_key
from workers.retry import POLICY, Action, Decision, FailureKind, decide
from workers.runtime import runtime
from workers.sync import SideFailure, TaskSync

log = logging.getLogger("crosslink.worker")

# A Redis restart (AOF reload included) takes seconds; a job waits this long for it in its slot,
# since no job can make progress without Redis anyway.
REDIS_OUTAGE_WAIT_S = 30.0
REDIS_PING_EVERY_S = 0.5


def pair_lock(store: redis.Redis, link: Link, side: str, number: int, counterpart: int | None) -> TaskLock:
    """The lock of a task pair: a key per task the run knows (workers.idempotency.TaskLock)."""
    keys = [lock_key(link.name, side, number)]
    if counterpart is not None:
        keys.append(lock_key(link.name, link.other(side), counterpart))
    return TaskLock(store, tuple(sorted(keys)))


def requeue(link: str, side: str, number: int, delay_s: float, attempt: int = 0) -> None:
    app.send_task(SYNC_TASK, args=[link, side, number], kwargs={"attempt": attempt},
                  queue=SYNC_QUEUE, countdown=max(0.0, delay_s))


@app.task(name=SYNC_TASK, bind=True, acks_late=True, ignore_result=True)
def sync_task(self: Task, link_name: str, side: str, number: int, attempt: int = 0) -> str:
    try:
        return _sync(link_name, side, number, attempt)
    except redis.RedisError as exc:
        # Redis is the broker, the registry and the leases: without it nothing can be decided,
        # and acking (what Celery does with a failed task) would lose the event. Wait for it to
        # come back, then hand the message back to the queue. If it stays away, the broker
        # cannot take the rejection either, and redelivers after its visibility timeout.
        log.warning("Redis unavailable (%s): the job goes back to the queue", type(exc).__name__,
                    extra={"link": link_name, "side": side, "task": number})
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


def _sync(link_name: str, side: str, number: int, attempt: int) -> str:
    rt = runtime()
    link = rt.link(link_name)
    state = rt.state(link_name)
    scale = rt.settings.time_scale
    context = {"link": link_name, "side": side, "task": number}
    event = {"link": link_name, "side": side, "task": number, "at": time.time()}
    if state.severed():
        state.park(event)
        log.info("link severed: event parked", extra=context)
        return "parked"
    counterpart = state.counterpart("task", side, number)
    lock = pair_lock(rt.redis, link, side, number, counterpart)
    if not lock.acquire(scaled_ttl_ms(TASK_LOCK_TTL_MS, MIN_TASK_LOCK_TTL_MS, scale)):
        _again(link_name, side, number, decide(FailureKind.BUSY, attempt, scale))
        return "locked"
    try:
        # From here on, a new event for this task queues one more run after this one.
        rt.redis.delete(pending_key(link_name, side, number))
        # Checked under the lock: a run that dead-lettered this task has finished by now.
        blocking = DeadLetters(rt.redis, link_name).hold_if_blocked(side, number, event)
        if blocking is not None:
            log.info("task has dead letter %s: event held behind it", blocking, extra=context)
            return "held"
        clients = {name: rt.client(link, name) for name in link.sides}
        report = TaskSync(link, side, number, clients, state, rt.writes).run()
    except LeaseBusy as exc:
        _again(link_name, side, number, decide(exc, attempt, scale))
        return "lease-busy"
    except SideFailure as failure:
        return _handle_failure(link_name, side, number, attempt, failure, scale)
    except redis.RedisError:
        raise  # not a bug of the run's: sync_task hands the job back to the queue
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the event: keep it as a dead letter
        log.exception("sync run failed unexpectedly", extra=context)
        decision = decide(exc, attempt, scale)
        _dead_letter(link_name, side, number, decision.reason, "unexpected")
        return "dead"
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass  # the lock's TTL frees it
    state.mark_synced(time.time())
    for follow_side, follow_number in report.follow_up:
        requeue(link_name, follow_side, follow_number, 0.0)
    log.info("synced: %s", report.summary(), extra={**context, "counterpart": report.counterpart})
    if report.queued:
        decision = decide(Queued(), attempt, scale)
        if decision.action is Action.DEAD_LETTER:
            _dead_letter(link_name, side, number, decision.reason, FailureKind.QUEUED.value)
            return "dead"
        _again(link_name, side, number, decision)
        return "verifying"
    return report.outcome


def _again(link_name: str, side: str, number: int, decision: Decision) -> None:
    requeue(link_name, side, number, decision.delay_s, decision.attempt)


def _handle_failure(link_name: str, side: str, number: int, attempt: int, failure: SideFailure,
                    scale: float) -> str:
    state = runtime().state(link_name)
    error = failure.error
    context = {"link": link_name, "side": side, "task": number}
    decision = decide(error, attempt, scale)
    if decision.action is Action.WAIT:
        _again(link_name, side, number, decision)
        return "rate-limited" if isinstance(error, RateLimited) else "busy"
    if decision.action is Action.RETRY:
        log.warning("transient failure on %s, retry in %.1fs: %s", failure.side, decision.delay_s,
                    decision.reason, extra=context)
        _again(link_name, side, number, decision)
        return "retrying"
    if decision.action is Action.PARK:
        if state.sever(failure.side, decision.reason, time.time()):
            log.error("link side %s severed: %s; events are parked, nothing is deleted",
                      failure.side, decision.reason, extra=context)
            app.send_task(PROBE_LINK, args=[link_name], queue=SYNC_QUEUE, countdown=decision.delay_s)
        state.park({"link": link_name, "side": side, "task": number, "at": time.time()})
        return "parked"
    kind = "gave-up" if isinstance(error, TransientError) else "permanent"
    _dead_letter(link_name, side, number, f"{failure.side}: {decision.reason}", kind)
    return "dead"


def _dead_letter(link_name: str, side: str, number: int, reason: str, kind: str) -> None:
    event = {"link": link_name, "side": side, "task": number}
    letter = runtime().state(link_name).dead_letter(event, reason, time.time(), kind)
    log.error("dead letter %s: %s", letter, reason, extra={"link": link_name, "side": side, "task": number})


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
                          countdown=POLICY.severed.probe_after_s * rt.settings.time_scale)
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
