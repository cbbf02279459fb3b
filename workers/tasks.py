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
- anything else permanent: a dead letter with its reason (crosslink.queue.dead_letters); until it is
  replayed or dropped (`crosslink dlq`), later events for the same task wait behind it in order,
  unless the run failed reading (nothing it wrote must come first: the letter holds nothing).
  A comment the events named that is gone, or on another task, is no failure (workers.sync).

Two kinds of job run the same runs: `sync_task` syncs one task (a burst's, a re-queued run, a
replay), `sync_batch` the tasks its link side's lone events left in the dirty set
(crosslink.queue.enqueue). A batch job first asks the account limiter (a peek: nothing taken) how soon
its link's next slots come on the side's account and the other side's, and claims only as many
tasks as the slots of its turn allow, up to BATCH_MAX (one at Planfix's 1 request/s; a full
batch with no limit); it begins each run (its lock, its events' hints), reads all their source
tasks with one request, and then finishes each run as a single job would, the later ones as
their slots come (await_turn, within the turn); then it looks and claims again, until none
waits. When its link's slot is not near, it begins nothing: it holds that slot
for its link's lane (the limiter's reservation, which lanes take in turn) and hands its side on
to a job due then, so a waiting backlog costs one job per turn and no run is begun only to be put
back. A job whose turn is over while slots are free hands its side to a new job at the back of
the queue, so that one busy link side does not keep a worker slot from the others; with a full
batch more waiting and slots for it, a helper job takes one batch in another slot. A run that
must wait after all (its account's slot was taken meanwhile, it needs more requests than it
looked for) goes back to the dirty set (wait_for_turn) and the side's job is due at its turn. A
task's claim names the job and lapses after CLAIM_TTL_MS: a batch job that died leaves its tasks
claimed, and its own message, delivered again, claims them again at once (any batch job of that
side does once they lapse; the poller sends one to every side with claims or dirty tasks); their
runs, whose hints the dead job may have taken, look in full. A task held for coalescing
(crosslink.queue.coalesce: its account's day would outrun its quota) is due in the dirty set only at
its hold's end: no job claims it before, and a job that finds only held tasks hands its side on
to a job due when the first is.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
from celery import Task
from celery.exceptions import Reject

from planfix.errors import PlanfixError, Queued, RateLimited, TransientError
from planfix.limiter import AccountLimiter, Outlook
from schemas.links import Link
from workers.app import app
from crosslink.queue.dead_letters import DeadLetters
from workers import telemetry
from workers.canonical import task_fields
from workers.idempotency import (
    MIN_TASK_LOCK_TTL_MS, TASK_LOCK_TTL_MS, LeaseBusy, LockLost, TaskLock, scaled_ttl_ms,
)
from workers.hints import RESUME, Hints
from workers.notes import note
from crosslink.queue.names import (
    PROBE_LINK, SYNC_BATCH, SYNC_QUEUE, SYNC_TASK, batch_key, claims_key, dirty_key, hints_key, lock_key,
    pending_key, pending_since_key, resume_key,
)
from workers.retry import POLICY, Action, Decision, FailureKind, decide
from workers.runtime import runtime
from workers.state import LinkState, RunState
from workers.sync import ADMISSION_LIMIT_WAIT_S, SideFailure, TaskSync, call_key, post_note

log = logging.getLogger("crosslink.worker")

# A Redis restart (AOF reload included) takes seconds; a job waits this long for it in its slot,
# since no job can make progress without Redis anyway.
REDIS_OUTAGE_WAIT_S = 30.0
# A waiting run's kept reads outlive any turn it can be given (the retry policy caps a rate
# wait well below this); after it they are simply read again.
RESUME_TTL_S = 600
REDIS_PING_EVERY_S = 0.5
# A batch job claims at most this many tasks at a time (one source read holds them all). A batch's
# writes go one after another, so its last task waits for the others': 10 keeps that wait to a few
# tens of milliseconds under a backlog (with 50, 400 events/s had a p99 near 2 s), and a backlog
# sends helpers, so batches share the worker slots.
BATCH_MAX = 10
# A batch job claims again while tasks wait, for this long; then a new job at the back of the
# queue takes over, so that one busy link side does not keep a worker slot from the others.
BATCH_TURN_S = 1.0
# A batch's claim on a task lapses after this long (scaled like the task lock): long enough for
# any batch to finish, short enough that a dead job's tasks are taken up again soon.
CLAIM_TTL_MS = 60_000
MIN_CLAIM_TTL_MS = 10_000
# A batch job begins runs only when its link's next slots are near: on the side's account, where
# a run's first request reads, no further off than that request may wait in the worker slot
# (ADMISSION_LIMIT_WAIT_S); on the other side's, where it writes once that read admitted it, at
# most TURN_SLACK_S (workers.sync lets an admitted run's requests wait longer; this keeps the
# worker slot held a moment only). The side's next job is sent due TURN_LEAD_S before the slot its
# link holds, so that its requests are made on time: the broker and the pool deliver it a little
# late, and a slot granted late before it moves it on by as much (the limiter spaces grants).
TURN_LEAD_S = ADMISSION_LIMIT_WAIT_S / 2
TURN_SLACK_S = 0.25

# KEYS: dirty, claims, batch. ARGV: this job's id, claim TTL (ms), most tasks to claim. Returns
# {tasks claimed, tasks left waiting (due now), 1 if this job holds the flag, ms until the next
# held task is due or -1}. A task is due at its score: a held one (crosslink.queue.coalesce) is left
# where it is until its hold ends, and the flag is kept for it. The job holds its side's
# batch flag while it runs (taking it if no job holds it), so events join it; once it finds
# nothing waiting it drops the flag in the same step, so the next event sends a job. The flag
# lapses with the claims: a job killed mid-turn holds its side's events no longer than that.
# Claims this very job holds (it died, and its message came back) are taken whatever MOST says,
# then claims that lapsed (their job died), then the tasks that have waited longest; a claim's
# value is "<lapse ms>:<job id>". With MOST 0 (its link's slot is not free: workers.tasks) the job
# claims nothing new and keeps the flag while tasks wait, to hand it on.
_CLAIM_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local flag = redis.call('GET', KEYS[3])
local owner = 0
if flag == false or flag == ARGV[1] then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  owner = 1
end
local most = tonumber(ARGV[3])
local taken = {}
local lapsed = {}
local claims = redis.call('HGETALL', KEYS[2])
for i = 1, #claims, 2 do
  local lapse, holder = string.match(claims[i + 1], '^(%d+):(.*)$')
  if holder == ARGV[1] then
    taken[#taken + 1] = claims[i]
  elseif lapse == nil or tonumber(lapse) <= now then
    lapsed[#lapsed + 1] = claims[i]
  end
end
local ready = 0
for _, task in ipairs(lapsed) do
  if #taken < most then taken[#taken + 1] = task else ready = ready + 1 end
end
if #taken < most then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, most - #taken)
  for _, task in ipairs(due) do
    taken[#taken + 1] = task
    redis.call('ZREM', KEYS[1], task)
  end
end
local left = redis.call('ZCOUNT', KEYS[1], '-inf', now) + ready
local held = -1
local next_held = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #next_held > 0 then
  held = math.ceil(tonumber(next_held[2]) - now)
end
if #taken == 0 and left == 0 and held < 0 and owner == 1 then
  redis.call('DEL', KEYS[3])
end
local claim = tostring(now + tonumber(ARGV[2])) .. ':' .. ARGV[1]
for _, task in ipairs(taken) do
  redis.call('HSET', KEYS[2], task, claim)
end
return {taken, left, owner, held}
"""
# Begin the runs of a batch's tasks in one step (what _begin does per task, in as many round
# trips). KEYS: the link's severed hash, task registry, snapshots, queued expectations, blocked
# tasks, the side's pending-since set. ARGV: side, other side, lock token, lock TTL (ms), the
# link's lock, pending, hints and resume key patterns (string.format, side and task), then the
# tasks. Returns {"severed"} when a side of the link is severed (nothing touched: each run parks
# as _begin does), else per task {counterpart, locked, hints, blocked letter, kept reads, the
# task's snapshot, the counterpart's snapshot, the counterpart's and the task's expectations, the
# counterpart's pending flag}. A task whose pair is locked keeps its pending flag and hints, as
# _begin leaves them.
_BEGIN_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'severed'}
end
local side, other, token, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lock_at, pending_at, hints_at, resume_at = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local out = {}
for i = 9, #ARGV do
  local task = ARGV[i]
  local key = side .. ':' .. task
  local counterpart = redis.call('HGET', KEYS[2], key)
  local locks = {string.format(lock_at, side, task)}
  if counterpart then
    locks[2] = string.format(lock_at, other, counterpart)
  end
  local locked = 0
  for j, lock in ipairs(locks) do
    if not redis.call('SET', lock, token, 'NX', 'PX', ttl) then
      for k = 1, j - 1 do redis.call('DEL', locks[k]) end
      locked = 1
      break
    end
  end
  if locked == 1 then
    out[#out + 1] = {counterpart, 1, {}, false, false, false, false, false, false, 0}
  else
    redis.call('DEL', string.format(pending_at, side, task))
    redis.call('ZREM', KEYS[6], task)
    local hints = redis.call('LRANGE', string.format(hints_at, side, task), 0, -1)
    redis.call('DEL', string.format(hints_at, side, task))
    local kept = redis.call('GET', string.format(resume_at, side, task))
    redis.call('DEL', string.format(resume_at, side, task))
    local blocked = redis.call('HGET', KEYS[5], key)
    local mine = redis.call('HGET', KEYS[3], key)
    local expected = redis.call('HGET', KEYS[4], key)
    local theirs, queued, pending = false, false, 0
    if counterpart then
      local their_key = other .. ':' .. counterpart
      theirs = redis.call('HGET', KEYS[3], their_key)
      queued = redis.call('HGET', KEYS[4], their_key)
      pending = redis.call('EXISTS', string.format(pending_at, other, counterpart))
    end
    out[#out + 1] = {counterpart, 0, hints, blocked, kept, mine, theirs, queued, expected, pending}
  end
end
return out
"""
# KEYS: claims. ARGV: this job's id, then the tasks it is done with: their claims go, unless
# another job has claimed a task since.
_SETTLE_LUA = """
local mine = ':' .. ARGV[1]
for i = 2, #ARGV do
  local claim = redis.call('HGET', KEYS[1], ARGV[i])
  if claim and string.sub(claim, -#mine) == mine then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""


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
    producer sets and pushes in one too: crosslink.queue.enqueue)."""
    flag, key = pending_key(link, side, number), hints_key(link, side, number)
    pipe = store.pipeline(transaction=True)
    pipe.delete(flag)
    pipe.zrem(pending_since_key(link, side), number)
    pipe.lrange(key, 0, -1)
    pipe.delete(key)
    _, _, raw, _ = pipe.execute()
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
        with telemetry.sync_run(link_name, side, number):
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


@dataclass
class Begun:
    """A run that holds its task pair's lock and took its events' hints: finish it (_finish)."""

    link: Link
    side: str
    number: int
    attempt: int
    hints: Hints
    lock: TaskLock
    kept_reads: dict
    state: RunState
    # The batch job making the run ("" for a job of its own) and, once the run had to wait for
    # its account's turn, how long (wait_for_turn).
    job_id: str = ""
    waits_s: float | None = None


def _sync(link_name: str, side: str, number: int, attempt: int, carried: Hints | None) -> str:
    begun = _begin(link_name, side, number, attempt, carried)
    return begun if isinstance(begun, str) else _finish(begun)


def _begin(link_name: str, side: str, number: int, attempt: int, carried: Hints | None) -> Begun | str:
    """Take the task pair's lock and the task's events; what the job returns when there is no
    run to make (parked, locked, held)."""
    rt = runtime()
    link = rt.link(link_name)
    state = RunState(rt.redis, link_name)
    scale = rt.settings.time_scale
    context = {"link": link_name, "side": side, "task": number}
    event = {"link": link_name, "side": side, "task": number, "at": time.time()}
    severed = state.severed()
    if severed:
        state.park(event)
        # The flag stays, so the task's later events queue no jobs that would only park too;
        # it is not waiting for a lost job, so the tick must not send it one (names.PENDING_SINCE_KEY).
        rt.redis.zrem(pending_since_key(link_name, side), number)
        log.info("link severed: event parked", extra=context)
        if side not in severed:
            _tell_of_cut(link, side, number, severed, resumed=False)
        return "parked"
    counterpart = state.counterpart("task", side, number)
    lock = pair_lock(rt.redis, link, side, number, counterpart)
    if not lock.acquire(scaled_ttl_ms(TASK_LOCK_TTL_MS, MIN_TASK_LOCK_TTL_MS, scale)):
        _again(link_name, side, number, decide(FailureKind.BUSY, attempt, scale), carried)
        return "locked"
    state.forget()  # the pairing read above decided the lock; under it, read afresh
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
            lock.release()
            return "held"
        kept = take_kept_reads(rt.redis, link_name, side, number, hints)
    except redis.RedisError:
        raise  # not a bug of the run's: the job goes back to the queue
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the event: keep it as a dead letter
        log.exception("sync run failed unexpectedly", extra=context)
        lock.release()
        _dead_letter(link_name, side, number, decide(exc, attempt, scale).reason, "unexpected")
        return "dead"
    return Begun(link, side, number, attempt, hints, lock, kept, state)


def _finish(begun: Begun, prefetched: dict | None = None) -> str:
    """Make the run BEGUN (PREFETCHED: its reads another made for it, by call) and release its
    lock; what the job returns."""
    rt = runtime()
    link, side, number, attempt, hints = begun.link, begun.side, begun.number, begun.attempt, begun.hints
    link_name = link.name
    state = begun.state
    scale = rt.settings.time_scale
    context = {"link": link_name, "side": side, "task": number}
    clients = {name: rt.client(link, name) for name in link.sides}
    run = TaskSync(link, side, number, clients, state, rt.writes, hints,
                   kept_reads=begun.kept_reads, prefetched=prefetched, guard=begun.lock.hold)
    finished = False
    try:
        report = run.run()
        finished = True
    except LeaseBusy as exc:
        _again(link_name, side, number, decide(exc, attempt, scale), hints)
        return "lease-busy"
    except LockLost:
        log.warning("sync run outlived its pair lock: it starts over", extra=context)
        _again(link_name, side, number, decide(FailureKind.BUSY, attempt, scale), hints.waited(wrote=True))
        return "lock-lost"
    except SideFailure as failure:
        if isinstance(failure.error, RateLimited):
            # Its turn comes later (the limiter holds a slot for this link): keep what the run
            # read, so the next attempt spends the slot on what is left to do.
            keep_reads(rt.redis, link_name, side, number, run.resumable_reads())
            begun.waits_s = decide(failure.error, attempt, scale).delay_s
            wait_for_turn(link_name, side, number, hints.waited(wrote=run.writes_sent > 0), begun.waits_s,
                          begun.job_id)
            return "waiting"
        return _handle_failure(link_name, side, number, attempt, failure, scale, hints)
    except redis.RedisError:
        raise  # not a bug of the run's: the job goes back to the queue
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the event: keep it as a dead letter
        log.exception("sync run failed unexpectedly", extra=context)
        decision = decide(exc, attempt, scale)
        _dead_letter(link_name, side, number, decision.reason, "unexpected")
        return "dead"
    finally:
        # Reads a waiting run of this pair kept are stale once this run wrote to the pair: they
        # would show what it overwrote (a webhook of its write, which would also stop them being
        # resumed, may be lost or late), and that run would carry it back.
        wrote_to = [(side, number)] + ([(link.other(side), run.report.counterpart)]
                                       if run.report.counterpart is not None else [])
        # (Its own, kept just now, holds no read of a side it wrote to: resumable_reads.)
        stale = [resume_key(link_name, s, n) for s, n in wrote_to
                 if begun.waits_s is None or (s, n) != (side, number)] if run.writes_sent else []
        try:
            state.close(begun.lock.release_in, synced=finished, stale=stale)
        except redis.RedisError:
            if finished:
                raise  # what it agreed on is not saved: the job goes back to the queue
            # else the lock's TTL frees it
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


# --- batches ----------------------------------------------------------------------------------------

@app.task(name=SYNC_BATCH, bind=True, acks_late=True, ignore_result=True)
def sync_batch(self: Task, link_name: str, side: str) -> str:
    """Sync the tasks waiting in SIDE's dirty set, up to BATCH_MAX (see the module docstring)."""
    try:
        return _sync_batch(link_name, side, self.request.id or "")
    except redis.RedisError as exc:
        # As sync_task: runs this job had begun keep their claims, which lapse, and the next
        # batch job takes them up with a full look.
        log.warning("Redis unavailable (%s): the job goes back to the queue", type(exc).__name__,
                    extra={"link": link_name, "side": side})
        _wait_for_redis()
        raise Reject(f"Redis unavailable: {type(exc).__name__}", requeue=True) from exc


class Claim(NamedTuple):
    tasks: list[int]
    # How many tasks still wait for the side (in the dirty set, or claimed by a job that died).
    left: int
    # Whether this job holds its side's batch flag: it claims again after these, until none wait.
    owner: bool
    # Seconds until the next task held for coalescing (crosslink.queue.coalesce) is due; None: none held.
    held_s: float | None = None


def claim_batch(store: redis.Redis, link_name: str, side: str, job_id: str, ttl_ms: int,
                most: int = BATCH_MAX) -> Claim:
    """Claim up to MOST of SIDE's tasks that are due for JOB_ID (see _CLAIM_LUA)."""
    taken, left, owner, held = store.eval(_CLAIM_LUA, 3, dirty_key(link_name, side), claims_key(link_name, side),
                                          batch_key(link_name, side), job_id, ttl_ms, most)
    held = int(held)
    return Claim(sorted(int(task) for task in taken), int(left), bool(owner), None if held < 0 else held / 1000)


def settle_batch(store: redis.Redis, link_name: str, side: str, job_id: str, numbers: list[int]) -> None:
    """Drop JOB_ID's claims on NUMBERS: their runs are done (or handed to jobs of their own)."""
    if numbers:
        store.eval(_SETTLE_LUA, 1, claims_key(link_name, side), job_id, *numbers)


class Turn(NamedTuple):
    """What a link's slots allow a batch job of one side now (turn_outlook)."""

    # How many runs it may begin now: 0 while a slot it needs is not near (TURN_SLACK_S).
    runs: int
    # Until the last of those slots comes (0: they are near).
    wait_s: float
    # Each account's outlook for the link's lane.
    accounts: dict[str, Outlook]


def turn_outlook(limiter: AccountLimiter, link: Link, side: str) -> Turn:
    """How many of SIDE's waiting runs LINK's batch job may begin now, from its lane's outlook on
    the side's account (where runs read, a batch of them in one request) and on the other side's
    (where they write). A run begun without its slots near would only be put back (wait_for_turn),
    so none is begun until they are: the side's within a first request's wait, the other side's
    within TURN_SLACK_S when a lone run's own read admits it first (a batch's runs are admitted by
    no read: within that wait too). Then as many runs as the other account has slots for in the
    job's turn (BATCH_TURN_S), one in every (lanes waiting + 1) while other links' lanes wait: one
    at Planfix's 1 request/s; the job paces the later ones (await_turn). Assumes a run makes one
    request to the other account and none to its own besides the batch's read (workers.hints); a
    run that needs more waits for them in the worker slot once admitted (workers.sync), or, past
    that, is put back. Reads only (reserve_turn holds slots)."""
    source, target = link.sides[side].account, link.sides[link.other(side)].account
    accounts = {account: limiter.peek(account, link.name) for account in dict.fromkeys((source, target))}
    wait_ms = max(outlook.wait_ms for outlook in accounts.values())
    first_request_ms = ADMISSION_LIMIT_WAIT_S * 1000
    if accounts[source].wait_ms > first_request_ms or accounts[target].wait_ms > (
            first_request_ms if source == target else TURN_SLACK_S * 1000):
        return Turn(0, wait_ms / 1000, accounts)
    if accounts[target].wait_ms > first_request_ms:
        return Turn(1, wait_ms / 1000, accounts)
    runs = runs_allowed(accounts[target], batch=int(source == target))
    runs = BATCH_MAX if runs is None else runs
    return Turn(max(1, min(BATCH_MAX, runs)), wait_ms / 1000, accounts)


def runs_allowed(outlook: Outlook, batch: int) -> int | None:
    """How many runs of one request each (after BATCH requests made once) an account's OUTLOOK
    allows in a job's turn (BATCH_TURN_S); None: no limit."""
    if outlook.free is None:
        return None
    slots = outlook.free
    if outlook.interval_s:
        slots += int(max(0.0, BATCH_TURN_S - outlook.wait_ms / 1000) // (outlook.interval_s * (outlook.others + 1)))
    return slots - batch


def await_turn(limiter: AccountLimiter, link: Link, side: str, until: float) -> bool:
    """Wait in the worker slot, until UNTIL (time.monotonic) at most, for LINK's next slots on
    both accounts to be within a first request's wait (the later runs of a batch are admitted by
    no read of their own), holding them for its lane meanwhile; False when they come later (the
    run then meets its refusal, and is put back). The job's turn bounds the sleep: the claim was
    sized to the slots that the turn holds (turn_outlook)."""
    while True:
        turn = turn_outlook(limiter, link, side)
        near_ms = ADMISSION_LIMIT_WAIT_S * 1000
        if turn.runs and all(outlook.wait_ms <= near_ms for outlook in turn.accounts.values()):
            return True
        due_s = reserve_turn(limiter, link, turn, near_ms=near_ms)
        sleep_s = max(0.0, due_s - TURN_LEAD_S)
        if time.monotonic() + sleep_s > until:
            return False
        time.sleep(sleep_s)


def reserve_turn(limiter: AccountLimiter, link: Link, turn: Turn,
                 near_ms: float = ADMISSION_LIMIT_WAIT_S * 1000) -> float:
    """Hold LINK's next slot on each account of TURN whose slot is further off than NEAR_MS, as a
    refused request does (the limiter's reservation: nothing counted, and no other lane takes it);
    seconds until the last of them comes. Lanes take turns: other links' backlogs hold the slots
    before it."""
    wait_ms = 0
    for account, outlook in turn.accounts.items():
        if outlook.wait_ms > near_ms and not outlook.held and outlook.reason == "rate":
            permit = limiter.acquire(account, link.name)
            # Granted when the slot came between the two looks (it passed unused): the next one is
            # an interval off, and the job after this one looks again.
            outlook = Outlook(permit.wait_ms, permit.reason, None, not permit.go)
        wait_ms = max(wait_ms, outlook.wait_ms)
    return min(wait_ms / 1000, POLICY.rate_limited.cap_s)


def _sync_batch(link_name: str, side: str, job_id: str) -> str:
    """Claim and sync batches, as many tasks at a time as its link's slots allow in its turn,
    until none waits; or, while some do, until its link's slots are not near or its turn is over:
    then the side's flag passes to a job due at the slot its link now holds, or, when the slots
    are free, at the back of the queue (other sides' jobs go first). Nothing is begun that would
    only be put back. A helper (a job that does not hold the side) goes on only while a full
    batch more waits."""
    rt = runtime()
    link = rt.link(link_name)
    ttl_ms = scaled_ttl_ms(CLAIM_TTL_MS, MIN_CLAIM_TTL_MS, rt.settings.time_scale)
    turn_ends = time.monotonic() + BATCH_TURN_S
    synced = 0
    while True:
        turn = turn_outlook(rt.limiter, link, side)
        over = time.monotonic() >= turn_ends
        claim = claim_batch(rt.redis, link_name, side, job_id, ttl_ms, 0 if over else turn.runs)
        if not claim.tasks:
            if claim.owner and claim.left:
                due_s = 0.0 if turn.runs else reserve_turn(rt.limiter, link, turn)
                rt.enqueuer.hand_off_batch(link_name, side, job_id, max(0.0, due_s - TURN_LEAD_S))
                return f"synced {synced} in batches; the rest wait {due_s:.2f}s for their turn"
            if claim.owner and claim.held_s is not None:
                # Only held tasks wait: the side's next job is due when the first hold ends (no
                # slot is reserved for it meanwhile; that job looks at its turn then).
                rt.enqueuer.hand_off_batch(link_name, side, job_id, claim.held_s)
                return f"synced {synced} in batches; the rest are held {claim.held_s:.2f}s to coalesce"
            break
        if claim.owner and claim.left >= BATCH_MAX and turn.runs >= BATCH_MAX:
            # A full batch more waits and the slots allow it: a helper job syncs it in another
            # slot meanwhile (runs wait on Planfix's answers far more than they use the CPU).
            # Without one, this job does.
            try:
                rt.enqueuer.help_batch(link_name, side)
            except Exception as exc:  # noqa: BLE001 - the claimed tasks must still be synced
                log.warning("no helper job sent (%s)", type(exc).__name__, extra={"link": link_name, "side": side})
        limited = any(outlook.interval_s for outlook in turn.accounts.values())
        waits_s = _sync_claimed(link, side, job_id, claim.tasks, paced_until=turn_ends if limited else None)
        synced += len(claim.tasks)
        if waits_s is not None:
            # Runs wait for their account's turn after all: the side's next job is due then, not
            # now (a helper leaves that to the side's own job).
            if claim.owner:
                rt.enqueuer.hand_off_batch(link_name, side, job_id, max(0.0, waits_s - TURN_LEAD_S))
            break
        if not claim.owner and claim.left < BATCH_MAX:
            break  # a helper helps while a full batch more waits; the side's own job does the rest
    return f"synced {synced} in batches"


def _sync_claimed(link: Link, side: str, job_id: str, numbers: list[int],
                  paced_until: float | None = None) -> float | None:
    """Make the runs of the claimed tasks NUMBERS: begin each, read their sources together,
    finish each (with PACED_UNTIL, a rate-limited link's later runs each when its slots are near,
    waiting for them until then at most: await_turn); then drop the claims of those done.
    Returns, when runs had to wait for their account's turn, the shortest wait (the job then
    hands its side on, due then: _sync_batch)."""
    rt = runtime()
    done: list[int] = []
    begun: list[Begun] = []
    waits: list[float] = []
    try:
        for number, result in _begin_batch(link, side, numbers, job_id):
            if isinstance(result, str):
                telemetry.count_run(link.name, side, result)
                done.append(number)
            else:
                begun.append(result)
        # Read after every run has taken its events: an event after that queues a run of its own.
        prefetched = _read_sources(link, side, begun)
        first = True
        while begun:
            if not first and paced_until is not None:
                await_turn(rt.limiter, link, side, paced_until)
            first = False
            run = begun.pop(0)
            with telemetry.sync_run(link.name, side, run.number):
                telemetry.count_run(link.name, side, _finish(run, prefetched.get(run.number)))
            done.append(run.number)
            if run.waits_s is not None:
                waits.append(run.waits_s)
    finally:
        for run in begun:  # not finished (Redis failed): the claim stays, to lapse
            try:
                run.lock.release()
            except redis.RedisError:
                pass
        settle_batch(rt.redis, link.name, side, job_id, done)
    return min(waits) if waits else None


class Taken(NamedTuple):
    """What _BEGIN_LUA did and read for one task (values as stored; None where absent)."""

    counterpart: int | None
    locked: bool  # its pair's lock is held by another run: nothing else was done
    hints: list[str]
    blocked: str | None
    kept: str | None
    mine: str | None
    theirs: str | None
    queued: str | None
    expected: str | None
    pending: bool


def take_batch(store: redis.Redis, link: Link, side: str, numbers: list[int], token: str,
               lock_ttl_ms: int) -> list[Taken] | None:
    """Lock the pairs of SIDE's tasks NUMBERS with TOKEN and take their events (_BEGIN_LUA); None
    when a side of the link is severed (nothing was touched)."""
    dead = DeadLetters(store, link.name)
    keys = [LinkState(store, link.name).key(*parts) for parts in
            (("severed", link.name), ("reg", link.name, "task"), ("snap", link.name), ("queued", link.name))]
    # Key patterns of this link for string.format in Lua (link names are [a-z0-9-]: no "%").
    patterns = [key_of(link.name, "%s", "%s") for key_of in (lock_key, pending_key, hints_key, resume_key)]
    answer = store.eval(_BEGIN_LUA, 6, *keys, dead.blocked_key, pending_since_key(link.name, side), side,
                        link.other(side), token, lock_ttl_ms,
                        *patterns, *numbers)
    if answer and _text(answer[0]) == "severed":
        return None
    return [Taken(int(cp) if cp is not None else None, bool(locked), [_text(item) for item in hints],
                  *(_text(value) if value is not None else None for value in rest[:6]), bool(pending))
            for cp, locked, hints, *rest, pending in answer]


def _begin_batch(link: Link, side: str, numbers: list[int], job_id: str) -> list[tuple[int, Begun | str]]:
    """Begin the runs of NUMBERS as _begin does, in one round trip for them all (take_batch), with
    what each run will read of its pair's state from Redis read in the same step; JOB_ID is the
    batch job making them."""
    rt = runtime()
    scale = rt.settings.time_scale
    token = secrets.token_hex(8)
    lock_ttl_ms = scaled_ttl_ms(TASK_LOCK_TTL_MS, MIN_TASK_LOCK_TTL_MS, scale)
    taken = take_batch(rt.redis, link, side, numbers, token, lock_ttl_ms)
    if taken is None:
        begun: list[tuple[int, Begun | str]] = []
        for number in numbers:  # each run parks its event, as a single job's would
            with telemetry.sync_run(link.name, side, number):
                begun.append((number, _begin(link.name, side, number, 0, None)))
        return begun
    results: list[tuple[int, Begun | str]] = []
    for number, took in zip(numbers, taken):
        context = {"link": link.name, "side": side, "task": number}
        lock = pair_lock(rt.redis, link, side, number, took.counterpart)
        if took.locked:
            _again(link.name, side, number, decide(FailureKind.BUSY, 0, scale), None)
            results.append((number, "locked"))
            continue
        lock.token, lock.ttl_ms = token, lock_ttl_ms
        hints = Hints.parse(took.hints)
        if took.blocked is not None:
            event = {"link": link.name, "side": side, "task": number, "at": time.time()}
            letter = DeadLetters(rt.redis, link.name).hold_if_blocked(side, number, event)
            if letter is not None:
                log.info("task has dead letter %s: event held behind it", letter, extra=context)
                lock.release()
                results.append((number, "held"))
                continue
        state = RunState(rt.redis, link.name)
        state.seed(side, number, link.other(side), took.counterpart, mine=took.mine, theirs=took.theirs,
                   queued=took.queued, expected=took.expected, pending=took.pending)
        kept_reads = json.loads(took.kept) if (took.kept and hints.resume) else {}
        results.append((number, Begun(link, side, number, 0, hints, lock, kept_reads, state, job_id)))
    return results


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _read_sources(link: Link, side: str, begun: list[Begun]) -> dict[int, dict]:
    """The source tasks of the runs BEGUN with one request, as each run's prefetched read (by
    call); none when it fails (each run then reads, and meets the failure, itself). A run that
    resumes with its source read kept is left out: read again, it spent its turn's slot on that
    read each time and never reached its next request (a run that lists the checklist after its
    task read waited for its turn for good on a slow account)."""
    candidates = [run for run in begun if not run.hints.reads_no_task]
    if len(candidates) < 2:
        return {}
    fields = task_fields(link, side)
    wanted = [run.number for run in candidates
              if call_key(side, "get_task", run.number, fields=fields) not in run.kept_reads]
    if len(wanted) < 2:
        return {}
    client = runtime().client(link, side)
    client.max_limit_sleep_s = ADMISSION_LIMIT_WAIT_S
    try:
        tasks = client.get_tasks(wanted, fields=fields)
    except PlanfixError as exc:
        log.info("batch read failed (%s): each run reads its own task", type(exc).__name__,
                 extra={"link": link.name, "side": side})
        return {}
    return {number: {call_key(side, "get_task", number, fields=fields): task}
            for number, task in tasks.items()}


def wait_for_turn(link_name: str, side: str, number: int, hints: Hints, wait_s: float, job_id: str = "") -> bool:
    """Put SIDE's task NUMBER, whose run must wait WAIT_S for its account's turn, back among its
    side's waiting tasks with its HINTS, for the side's batch job due then (Enqueuer.wait_for_turn).
    JOB_ID: the batch job the run was part of, if any. True when that job holds the side's flag
    and must hand it on itself (_sync_batch)."""
    stored = [hint for hint in hints.encode() if hint != RESUME]
    return runtime().enqueuer.wait_for_turn(link_name, side, number, stored, RESUME if hints.resume else "",
                                            wait_s, job_id)


def _again(link_name: str, side: str, number: int, decision: Decision, hints: Hints | None) -> None:
    requeue(link_name, side, number, decision.delay_s, decision.attempt, hints)


def _tell_of_cut(link: Link, side: str, number: int, severed: Mapping[str, Mapping[str, Any]], *,
                 resumed: bool) -> None:
    """A note on SIDE's task NUMBER, on the side that keeps working, that the other side's access
    is lost (its changes here are kept and carried once access is back; nothing is deleted), or,
    RESUMED, that it is back: once per cut (SEVERED: side -> reason and time). Best effort: the
    event is parked before, and a note that cannot be written now is not worth a retry."""
    rt = runtime()
    cut = {other: info for other, info in severed.items() if other != side}
    if not cut:
        return
    other, info = next(iter(cut.items()))
    try:
        text = (note(link, side, "resumed", other=other) if resumed
                else note(link, side, "cut", other=other, reason=info.get("reason")))
        client = rt.client(link, side)
        post_note(lambda method, *args, **kwargs: _listed(getattr(client, method)(*args, **kwargs)), rt.writes,
                  link.name, side, number, text, f"{'resumed' if resumed else 'cut'}:{other}:{info.get('at')}")
        if not resumed:
            rt.state(link.name).noted_cut(side, number)
    except Exception as exc:  # noqa: BLE001 - best effort, see above
        log.warning("could not note the %s on the task: %s", "resume" if resumed else "cut", exc,
                    extra={"link": link.name, "side": side, "task": number})


def _listed(result: Any) -> Any:
    return list(result) if isinstance(result, Iterator) else result


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
        if failure.side != side:
            _tell_of_cut(runtime().link(link_name), side, number, state.severed(), resumed=False)
        return "parked"
    kind = "gave-up" if isinstance(error, TransientError) else "permanent"
    # A failed read wrote nothing the task's later events must wait for: they read afresh.
    _dead_letter(link_name, side, number, f"{failure.side}: {decision.reason}", kind, blocks=not failure.read)
    return "dead"


def _dead_letter(link_name: str, side: str, number: int, reason: str, kind: str, blocks: bool = True) -> None:
    """Keep the task's event with REASON; BLOCKS: its later events wait behind it, as the write
    that failed must come first (crosslink.queue.dead_letters)."""
    event = {"link": link_name, "side": side, "task": number}
    letter = DeadLetters(runtime().redis, link_name).add(event, reason, time.time(), kind, blocks=blocks)
    log.error("dead letter %s: %s%s", letter, reason,
              "" if blocks else " (a failed read: the task's later events run)",
              extra={"link": link_name, "side": side, "task": number})


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
    for side, number in state.take_noted_cut():
        _tell_of_cut(link, side, number, severed, resumed=True)
    replayed = set()
    for event in state.take_parked():
        key = (event["side"], int(event["task"]))
        if key not in replayed:
            replayed.add(key)
            requeue(link_name, event["side"], int(event["task"]), 0.0)
    log.info("link access restored: replaying %d parked tasks", len(replayed), extra={"link": link_name})
    return "restored"
