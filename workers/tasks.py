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

import json
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
from workers.hints import Hints
from workers.names import (
    PROBE_LINK, SYNC_QUEUE, SYNC_TASK, hints_key, lock_key, pending_key, resume_key,
)
from workers.retry import POLICY, Action, Decision, FailureKind, decide
from workers.runtime import runtime
from workers.sync import SideFailure, TaskSync

log = logging.getLogger("crosslink.worker")

# A Redis restart (AOF reload included) takes seconds; a job waits this long for it in its slot,
# since no job can make progress without Redis anyway.
REDIS_OUTAGE_WAIT_S = 30.0
# A waiting run's kept reads outlive any turn it can be given (the retry policy caps a rate
# wait well below this); after it they are simply read again.
RESUME_TTL_S = 600
REDIS_PING_EVERY_S = 0.5


def pair_lock(store: redis.Redis, link: Link, side: str, number: int, counterpart: int | None) -> TaskLock:
    """The lock of a task pair: a key per task the run knows (workers.idempotency.TaskLock)."""
    keys = [lock_key(link.name, side, number)]
    if counterpart is not None:
        keys.append(lock_key(link.name, link.other(side), counterpart))
    return TaskLock(store, tuple(sorted(keys)))


def requeue(link: str, side: str, number: int, delay_s: float, attempt: int = 0,
            hints: Hints | None = None) -> None:
    """Queue the task's sync again; HINTS (what its events were) travel along, none = full look."""
    kwargs: dict = {"attempt": attempt}
    if hints is not None:
        kwargs["hints"] = hints.encode()
    app.send_task(SYNC_TASK, args=[link, side, number], kwargs=kwargs,
                  queue=SYNC_QUEUE, countdown=max(0.0, delay_s))


def take_hints(store: redis.Redis, link: str, side: str, number: int) -> list[str]:
    """Clear the task's pending flag and take its events' hints, in one transaction (the
    producer sets and pushes in one too: producers.enqueue)."""
    flag, key = pending_key(link, side, number), hints_key(link, side, number)
    pipe = store.pipeline(transaction=True)
    pipe.delete(flag)
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    _, raw, _ = pipe.execute()
    return [item.decode() if isinstance(item, bytes) else item for item in raw]


def keep_reads(store: redis.Redis, link: str, side: str, number: int, reads: dict) -> None:
    if reads:
        store.set(resume_key(link, side, number), json.dumps(reads), ex=RESUME_TTL_S)


def take_kept_reads(store: redis.Redis, link: str, side: str, number: int, hints: Hints) -> dict:
    """The reads a waiting run kept, if its hints say it resumes (no event came since)."""
    key = resume_key(link, side, number)
    if not hints.resume:
        store.delete(key)
        return {}
    pipe = store.pipeline(transaction=True)
    pipe.get(key)
    pipe.delete(key)
    raw, _ = pipe.execute()
    return json.loads(raw) if raw else {}


@app.task(name=SYNC_TASK, bind=True, acks_late=True, ignore_result=True)
def sync_task(self: Task, link_name: str, side: str, number: int, attempt: int = 0,
              hints: list[str] | None = None) -> str:
    carried = Hints.parse(hints) if hints else None
    try:
        return _sync(link_name, side, number, attempt, carried)
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


def _sync(link_name: str, side: str, number: int, attempt: int, carried: Hints | None) -> str:
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
        _again(link_name, side, number, decide(FailureKind.BUSY, attempt, scale), carried)
        return "locked"
    try:
        # From here on, a new event for this task queues one more run after this one.
        taken = take_hints(rt.redis, link_name, side, number)
        if carried is None:
            hints = Hints.parse(taken)
        else:
            hints = carried.merge(Hints.parse(taken)) if taken else carried
        # Checked under the lock: a run that dead-lettered this task has finished by now.
        blocking = DeadLetters(rt.redis, link_name).hold_if_blocked(side, number, event)
        if blocking is not None:
            log.info("task has dead letter %s: event held behind it", blocking, extra=context)
            return "held"
        clients = {name: rt.client(link, name) for name in link.sides}
        run = TaskSync(link, side, number, clients, state, rt.writes, hints,
                       kept_reads=take_kept_reads(rt.redis, link_name, side, number, hints))
        report = run.run()
    except LeaseBusy as exc:
        _again(link_name, side, number, decide(exc, attempt, scale), hints)
        return "lease-busy"
    except SideFailure as failure:
        if isinstance(failure.error, RateLimited):
            # Its turn comes later (the limiter holds a slot for this link): keep what the run
            # read, so the next attempt spends the slot on what is left to do.
            keep_reads(rt.redis, link_name, side, number, run.kept_reads)
            hints = hints.waited(wrote=run.writes_sent > 0)
        return _handle_failure(link_name, side, number, attempt, failure, scale, hints)
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
        # The read-back run reads the task and, as a write to it is queued, its counterpart.
        _again(link_name, side, number, decision, Hints(full=False, task_events=1))
        return "verifying"
    return report.outcome


def _again(link_name: str, side: str, number: int, decision: Decision, hints: Hints | None) -> None:
    requeue(link_name, side, number, decision.delay_s, decision.attempt, hints)


def _handle_failure(link_name: str, side: str, number: int, attempt: int, failure: SideFailure,
                    scale: float, hints: Hints) -> str:
    state = runtime().state(link_name)
    error = failure.error
    context = {"link": link_name, "side": side, "task": number}
    decision = decide(error, attempt, scale)
    if decision.action is Action.WAIT:
        _again(link_name, side, number, decision, hints)
        return "rate-limited" if isinstance(error, RateLimited) else "busy"
    if decision.action is Action.RETRY:
        log.warning("transient failure on %s, retry in %.1fs: %s", failure.side, decision.delay_s,
                    decision.reason, extra=context)
        _again(link_name, side, number, decision, hints)
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
