"""A task's sync run from its job's side: begin, run, and turn failures into the right waiting.

A run begins one way, for a job of its own and for a batch alike (begin_runs: one Lua step locks
the task pairs, takes their events' hints and kept reads, and reads what the runs will need of
their pairs' state), then the sync itself (workers.sync.TaskSync) is made and its lock released
(finish). Failures become the waiting the retry policy (workers.retry) decides:

- rate limited (our limiter or Planfix's): the run waits for its account's turn among its side's
  waiting tasks (wait_for_turn), never asleep in a worker slot;
- the task pair is locked by another run, or a write lease is held: re-queued shortly;
- transient (5xx, timeout): retried with jittered exponential back-off counted from real attempts;
- a write Planfix queued (202): the same task is re-queued to read it back and plan again;
- access lost (bad token, scope, user removed): the link side is *severed*, the event is parked,
  nothing is deleted anywhere, and a probe (probe) re-checks access and replays parked events;
- anything else permanent: a dead letter with its reason (crosslink.queue.dead_letters); until it is
  replayed or dropped (`crosslink dlq`), later events for the same task wait behind it in order,
  unless the run failed reading (nothing it wrote must come first: the letter holds nothing).
  A comment the events named that is gone, or on another task, is no failure (workers.sync).
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

from crosslink.queue.dead_letters import DeadLetters
from crosslink.queue.names import (
    PROBE_LINK,
    SYNC_QUEUE,
    SYNC_TASK,
    hints_key,
    lock_key,
    pending_key,
    pending_since_key,
    record_synced_stamp,
    resume_key,
    severed_key,
)
from planfix.errors import PlanfixError, Queued, RateLimited, TransientError
from schemas.links import Link
from workers import continuation, telemetry
from workers.anchors import RESUMED, RULES_CHECK, SEVERED, send_anchor
from workers.app import app
from workers.canonical import task_fields
from workers.governance import Hands, govern, is_paused
from workers.hints import RESUME, Hints
from workers.idempotency import MIN_TASK_LOCK_TTL_MS, TASK_LOCK_TTL_MS, LeaseBusy, LockLost, TaskLock, scaled_ttl_ms
from workers.notes import note
from workers.retry import POLICY, Action, Decision, FailureKind, decide
from workers.runtime import IN_FORCE_TTL_S, runtime
from workers.state import LinkState, RunState
from workers.sync import ADMISSION_LIMIT_WAIT_S, FOLLOW_UP_LIMIT_WAIT_S, SideFailure, TaskSync, call_key, post_note

log = logging.getLogger("crosslink.worker")


# What a record task's run reads of the task itself: its change stamp (crosslink.queue.names).
RECORD_STAMP_FIELDS = "id,dateOfLastUpdate,dateOfLastComment"
# A waiting run's kept reads outlive any turn it can be given (the retry policy caps a rate
# wait well below this); after it they are simply read again.
RESUME_TTL_S = 600


# Begin the runs of tasks in one step (begin_runs, for a job of its own and a batch alike).
# KEYS: the link's severed hash, task registry, snapshots, queued expectations, blocked tasks, the side's pending-since set. ARGV: side, other side, lock token, lock TTL (ms), the
# link's lock, pending, hints and resume key patterns (string.format, side and task), then the
# tasks. Returns {"severed"} when a side of the link is severed (nothing touched: each run parks
# as _park does), else per task {counterpart, locked, hints, blocked letter, kept reads, the
# task's snapshot, the counterpart's snapshot, the counterpart's and the task's expectations, the
# counterpart's pending flag}. A task whose pair is locked keeps its pending flag and hints, as
# a re-queued run finds them.
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


def pair_lock(store: redis.Redis, link: Link, side: str, number: int, counterpart: int | None) -> TaskLock:
    """The lock of a task pair: a key per task the run knows (workers.idempotency.TaskLock)."""
    keys = [lock_key(link.name, side, number)]
    if counterpart is not None:
        keys.append(lock_key(link.name, link.other(side), counterpart))
    return TaskLock(store, tuple(sorted(keys)))


def requeue(link: str, side: str, number: int, delay_s: float, attempt: int = 0,
            hints: Hints | None = None, itself: bool = False) -> None:
    """Queue the task's sync again; HINTS (what its events were) travel along, none = full look.
    ITSELF: as the running job's next run if it is the task's own (workers.continuation)."""
    kwargs: dict = {"attempt": attempt}
    if hints is not None:
        kwargs["hints"] = hints.encode()
    continuation.send(app, SYNC_TASK, [link, side, number], delay_s, itself=itself, kwargs=kwargs, queue=SYNC_QUEUE)


def keep_reads(store: redis.Redis, link: str, side: str, number: int, reads: dict) -> None:
    if reads:
        store.set(resume_key(link, side, number), json.dumps(reads), ex=RESUME_TTL_S)


@dataclass
class Begun:
    """A run that holds its task pair's lock and took its events' hints: finish it (finish)."""

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


def sync_one(link_name: str, side: str, number: int, attempt: int, carried: Hints | None) -> str:
    """Make the run of SIDE's task NUMBER for a job of its own (ATTEMPT, CARRIED: the hints a
    re-queued run brings along); what the job returns."""
    [(_, begun)] = begin_runs(runtime().link(link_name), side, [number], attempt=attempt, carried=carried)
    return begun if isinstance(begun, str) else finish(begun)


def begin_runs(link: Link, side: str, numbers: list[int], job_id: str = "", attempt: int = 0,
               carried: Hints | None = None) -> list[tuple[int, Begun | str]]:
    """Begin the runs of SIDE's tasks NUMBERS: lock each pair and take its events, in one round
    trip for them all (take_batch), with what each run will read of its pair's state from Redis
    read in the same step; JOB_ID is the batch job making them ("" for a job of its own, whose
    ATTEMPT and CARRIED hints it passes). Per task, the Begun run, or what the job returns when
    there is no run to make (parked, locked, held, dead)."""
    rt = runtime()
    lock_ttl_ms = scaled_ttl_ms(TASK_LOCK_TTL_MS, MIN_TASK_LOCK_TTL_MS, rt.settings.time_scale)
    token = secrets.token_hex(8)
    held: list[tuple[int, Begun | str]] = []
    if is_paused(link, rt.state(link.name), side):
        # The side's people hold what it sends: its runs park, but for its record task's, which
        # reads their commands (resume among them: workers.governance).
        record = rt.state(link.name).record_task(side)
        held = [(number, _park(link, side, number, "paused")) for number in numbers if number != record]
        numbers = [number for number in numbers if number == record]
    taken = take_batch(rt.redis, link, side, numbers, token, lock_ttl_ms) if numbers else []
    if taken is None:
        for number in numbers:
            with telemetry.sync_run(link.name, side, number):
                held.append((number, _park(link, side, number)))
        return held
    return held + [(number, _begin_one(link, side, number, took, token, lock_ttl_ms, job_id, attempt, carried))
                   for number, took in zip(numbers, taken)]


def _begin_one(link: Link, side: str, number: int, took: Taken, token: str, lock_ttl_ms: int, job_id: str,
               attempt: int, carried: Hints | None) -> Begun | str:
    """The run of SIDE's task NUMBER, from what the begin step TOOK for it (its pair locked with
    TOKEN, or not)."""
    rt = runtime()
    lock = pair_lock(rt.redis, link, side, number, took.counterpart)
    if took.locked:
        _again(link.name, side, number, decide(FailureKind.BUSY, attempt, rt.settings.time_scale), carried)
        return "locked"
    lock.token, lock.ttl_ms = token, lock_ttl_ms
    try:
        return _begun(link, side, number, took, lock, job_id, attempt, carried)
    except redis.RedisError:
        raise  # not a bug of the run's: the job goes back to the queue
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the event: keep it as a dead letter
        log.exception("sync run failed unexpectedly", extra={"link": link.name, "side": side, "task": number})
        lock.release()
        _dead_letter(link.name, side, number, decide(exc, attempt, rt.settings.time_scale).reason, "unexpected")
        return "dead"


def _begun(link: Link, side: str, number: int, took: Taken, lock: TaskLock, job_id: str, attempt: int,
           carried: Hints | None) -> Begun | str:
    """The run of a task whose pair TOOK locked (LOCK) and whose events it took: held behind its
    dead letter, or Begun with its hints (CARRIED ones merged), kept reads and pair's state."""
    rt = runtime()
    taken = Hints.parse(took.hints)
    hints = taken if carried is None else (carried.merge(taken) if took.hints else carried)
    if took.blocked is not None:
        # Checked under the lock: a run that dead-lettered this task has finished by now.
        event = {"link": link.name, "side": side, "task": number, "at": time.time()}
        letter = DeadLetters(rt.redis, link.name).hold_if_blocked(side, number, event)
        if letter is not None:
            log.info("task has dead letter %s: event held behind it", letter,
                     extra={"link": link.name, "side": side, "task": number})
            lock.release()
            return "held"
    state = RunState(rt.redis, link.name)
    state.seed(side, number, link.other(side), took.counterpart, mine=took.mine, theirs=took.theirs,
               queued=took.queued, expected=took.expected, pending=took.pending)
    kept_reads = json.loads(took.kept) if (took.kept and hints.resume) else {}
    return Begun(link, side, number, attempt, hints, lock, kept_reads, state, job_id)


def _park(link: Link, side: str, number: int, why: str = "severed") -> str:
    """A side of LINK is severed, or SIDE's sending paused (WHY): park the task's event (replayed
    when access returns, probe; or when the side resumes, workers.governance)."""
    rt = runtime()
    state = RunState(rt.redis, link.name)
    state.park({"link": link.name, "side": side, "task": number, "at": time.time()})
    # The flag stays, so the task's later events queue no jobs that would only park too; it is
    # not waiting for a lost job, so the tick must not send it one (names.PENDING_SINCE_KEY).
    rt.redis.zrem(pending_since_key(link.name, side), number)
    log.info("link %s: event parked", why, extra={"link": link.name, "side": side, "task": number})
    severed = state.severed()
    if side not in severed:
        _tell_of_cut(link, side, number, severed, resumed=False)
    return "parked"


def finish(begun: Begun, prefetched: dict | None = None) -> str:
    """Make the run BEGUN (PREFETCHED: its reads another made for it, by call) and release its
    lock; what the job returns."""
    rt = runtime()
    link, side, number = begun.link, begun.side, begun.number
    if number == begun.state.record_task(side):
        return _govern(begun, prefetched)
    clients = {name: rt.client(link, name) for name in link.sides}
    run = TaskSync(link, side, number, clients, begun.state, rt.writes, begun.hints,
                   kept_reads=begun.kept_reads, prefetched=prefetched, guard=begun.lock.hold,
                   recorder=rt.recorder(link))
    finished = False
    try:
        report = run.run()
        finished = True
    except (LeaseBusy, LockLost, SideFailure) as failure:
        return _run_failed(begun, run, failure)
    except redis.RedisError:
        raise  # not a bug of the run's: the job goes back to the queue
    except Exception as exc:  # noqa: BLE001 - a bug must not lose the event: keep it as a dead letter
        log.exception("sync run failed unexpectedly", extra={"link": link.name, "side": side, "task": number})
        decision = decide(exc, begun.attempt, rt.settings.time_scale)
        _dead_letter(link.name, side, number, decision.reason, "unexpected")
        return "dead"
    finally:
        _close(begun, run, finished)
    return _ran(begun, report)


def _run_failed(begun: Begun, run: TaskSync, failure: LeaseBusy | LockLost | SideFailure) -> str:
    """The run BEGUN met FAILURE: it goes back to wait, or is parked or dead-lettered."""
    rt = runtime()
    link_name, side, number, attempt, hints = begun.link.name, begun.side, begun.number, begun.attempt, begun.hints
    scale = rt.settings.time_scale
    if isinstance(failure, LeaseBusy):
        _again(link_name, side, number, decide(failure, attempt, scale), hints)
        return "lease-busy"
    if isinstance(failure, LockLost):
        log.warning("sync run outlived its pair lock: it starts over",
                    extra={"link": link_name, "side": side, "task": number})
        _again(link_name, side, number, decide(FailureKind.BUSY, attempt, scale), hints.waited(wrote=True))
        return "lock-lost"
    if isinstance(failure.error, RateLimited):
        # Its turn comes later (the limiter holds a slot for this link): keep what the run
        # read, so the next attempt spends the slot on what is left to do.
        keep_reads(rt.redis, link_name, side, number, run.resumable_reads())
        begun.waits_s = decide(failure.error, attempt, scale).delay_s
        wait_for_turn(link_name, side, number, hints.waited(wrote=run.writes_sent > 0), begun.waits_s,
                      begun.job_id)
        return "waiting"
    return _handle_failure(link_name, side, number, attempt, failure, scale, hints)


def _close(begun: Begun, run: TaskSync, finished: bool) -> None:
    """Save what the run agreed on (FINISHED) and release its lock, in one step (RunState.close)."""
    link, side, number = begun.link, begun.side, begun.number
    # Reads a waiting run of this pair kept are stale once this run wrote to the pair: they
    # would show what it overwrote (a webhook of its write, which would also stop them being
    # resumed, may be lost or late), and that run would carry it back.
    wrote_to = [(side, number)] + ([(link.other(side), run.report.counterpart)]
                                   if run.report.counterpart is not None else [])
    # (Its own, kept just now, holds no read of a side it wrote to: resumable_reads.)
    stale = [resume_key(link.name, s, n) for s, n in wrote_to
             if begun.waits_s is None or (s, n) != (side, number)] if run.writes_sent else []
    try:
        begun.state.close(begun.lock.release_in, synced=finished, stale=stale)
    except redis.RedisError:
        if finished:
            raise  # what it agreed on is not saved: the job goes back to the queue
        # else the lock's TTL frees it


def _ran(begun: Begun, report: Any) -> str:
    """The run BEGUN finished with REPORT: follow-ups queued, a queued write read back."""
    link_name, side, number = begun.link.name, begun.side, begun.number
    for follow_side, follow_number in report.follow_up:
        requeue(link_name, follow_side, follow_number, 0.0)
    log.info("synced: %s", report.summary(),
             extra={"link": link_name, "side": side, "task": number, "counterpart": report.counterpart})
    if report.queued:
        decision = decide(Queued(), begun.attempt, runtime().settings.time_scale)
        if decision.action is Action.DEAD_LETTER:
            _dead_letter(link_name, side, number, decision.reason, FailureKind.QUEUED.value)
            return "dead"
        # The read-back run reads the task and, as a write to it is queued, its counterpart.
        _again(link_name, side, number, decision, Hints(full=False, task_events=1))
        return "verifying"
    return report.outcome


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
    keys = [severed_key(link.name), *(LinkState(store, link.name).key(*parts) for parts in
                                      (("reg", link.name, "task"), ("snap", link.name), ("queued", link.name)))]
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_sources(link: Link, side: str, begun: list[Begun]) -> dict[int, dict]:
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
    and must hand it on itself (workers.batch.sync_side)."""
    stored = [hint for hint in hints.encode() if hint != RESUME]
    return runtime().enqueuer.wait_for_turn(link_name, side, number, stored, RESUME if hints.resume else "",
                                            wait_s, job_id)


def _again(link_name: str, side: str, number: int, decision: Decision, hints: Hints | None) -> None:
    """The task's run goes again after DECISION's delay: the running job's next run if that is the
    task's own job (one job that waits: workers.continuation), else a job of its own."""
    requeue(link_name, side, number, decision.delay_s, decision.attempt, hints, itself=True)


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
        # The note may wait up to a turn of the account's limiter: the cut's anchor and the
        # record task's run share it now, and a note dropped here is not posted again.
        client.max_limit_sleep_s = FOLLOW_UP_LIMIT_WAIT_S
        post_note(lambda method, *args, **kwargs: _listed(getattr(client, method)(*args, **kwargs)), rt.writes,
                  link, side, number, text, f"{'resumed' if resumed else 'cut'}:{other}:{info.get('at')}",
                  rt.recorder(link))
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
        severed_at = time.time()
        severed_now = state.sever(failure.side, decision.reason, severed_at)
        if severed_now:
            # The probe first: nothing after it may keep the link from resuming.
            app.send_task(PROBE_LINK, args=[link_name], queue=SYNC_QUEUE, countdown=decision.delay_s)
            log.error("link side %s severed: %s; events are parked, nothing is deleted",
                      failure.side, decision.reason, extra=context)
        state.park({"link": link_name, "side": side, "task": number, "at": time.time()})
        if severed_now:
            _record_access(link_name, "severed", failure.side, {"reason": decision.reason, "at": severed_at})
            send_anchor(link_name, SEVERED)  # the journal's head, posted where access remains
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


def _govern(begun: Begun, prefetched: dict | None = None) -> str:
    """The run of a side's record task: its people's commands applied (workers.governance), and
    the task's change stamp recorded as seen, read before its comments (PREFETCHED: a batch read
    it), so the poller looks at it again only once it changes again (an anchor, a command)."""
    rt = runtime()
    link, side, number = begun.link, begun.side, begun.number
    client = rt.client(link, side)

    def tell(on: str, task: int, text: str, occasion: str) -> None:
        there = rt.client(link, on)
        post_note(lambda method, *args, **kwargs: _listed(getattr(there, method)(*args, **kwargs)), rt.writes,
                  link, on, task, text, occasion, rt.recorder(link))

    def in_force(number: int) -> None:
        # The anchor job records the version's entry and posts the head, once every process
        # runs the link on it (workers.runtime.IN_FORCE_TTL_S).
        send_anchor(link.name, RULES_CHECK, countdown_s=IN_FORCE_TTL_S * 2)
        for on in link.sides:
            record = begun.state.record_task(on)
            if record is not None:
                tell(on, record, note(link, on, "in_force", version=number), f"in-force:{number}")

    hands = Hands(begun.state, rt.recorder(link), rt.versions, tell, lambda: replay_parked(link.name), in_force)
    read = (prefetched or {}).get(call_key(side, "get_task", number, fields=task_fields(link, side)))
    try:
        task = read or client.get_task(number, fields=RECORD_STAMP_FIELDS)
        applied = govern(link, side, number, hands=hands,
                         call=lambda method, *args, **kwargs: _listed(getattr(client, method)(*args, **kwargs)))
    except PlanfixError as exc:
        _again(link.name, side, number, decide(exc, begun.attempt, rt.settings.time_scale), begun.hints)
        return "retrying"
    finally:
        begun.lock.release()
    record_synced_stamp(rt.redis, link.name, side, number, task)
    return "governed" if applied else "noop"


def replay_parked(link_name: str) -> int:
    """Queue the link's parked events again, oldest first, once per task; how many tasks."""
    replayed = set()
    for event in runtime().state(link_name).take_parked():
        key = (event["side"], int(event["task"]))
        if key not in replayed:
            replayed.add(key)
            requeue(link_name, event["side"], int(event["task"]), 0.0)
    return len(replayed)


def _record_access(link_name: str, kind: str, side: str, what: Mapping[str, Any]) -> None:
    """Record in the journal that SIDE's access was lost or is back (KIND severed, resumed): WHAT
    says why and when; the time it was severed names the occasion, so a retry records it once."""
    rt = runtime()
    at = what["at"] if kind == "severed" else what["severed"].get("at")
    try:
        rt.recorder(rt.link(link_name)).crossed(kind, side, source={"side": side}, target={}, content=what,
                                                key=f"{side}:{at}")
    except Exception as exc:  # noqa: BLE001 - the probe and the replay must go on whatever the journal does
        log.error("the journal did not record the %s side %s: %s", side, kind, exc,
                  extra={"link": link_name, "side": side})


def probe(link_name: str) -> str:
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
            continuation.send(app, PROBE_LINK, [link_name], exc.retry_after_ms / 1000, itself=True, queue=SYNC_QUEUE)
            return "rate-limited"
        except Exception as exc:  # noqa: BLE001 - any failure means access is still lost
            log.info("link side %s still severed: %s", side, exc, extra={"link": link_name, "side": side})
            # Probing again as the same job: a cut of hours is one job that waits (workers.continuation).
            continuation.send(app, PROBE_LINK, [link_name], POLICY.severed.probe_after_s * rt.settings.time_scale,
                              itself=True, queue=SYNC_QUEUE)
            return "severed"
        state.restore(side)
    for side, number in state.take_noted_cut():
        _tell_of_cut(link, side, number, severed, resumed=True)   # best effort: it never raises
    # The parked events before the journal: nothing after the restore may keep them waiting.
    replayed = replay_parked(link_name)
    log.info("link access restored: replaying %d parked tasks", replayed, extra={"link": link_name})
    for side in severed:
        _record_access(link_name, "resumed", side, {"severed": severed[side], "at": time.time()})
    send_anchor(link_name, RESUMED)  # the journal's head, posted in both accounts again
    return "restored"
