"""The one way a producer queues a sync job: coalesced per (link, side, task), by task name.

The flag in ``crosslink.queue.names.pending_key`` is set with NX; only the event that sets it sends a
job, and the job clears it when it starts, so events arriving during a run queue exactly one
more run afterwards.

Each event also leaves a hint of what it was (``crosslink.queue.names.hints_key``): the job reads only
what its events point at (a comment event needs no task read, a field edit no comment list).
The hint is pushed in the same MULTI that sets the flag, and the job takes the hints in the same
MULTI that clears it, so a hint is always seen by the job that runs after it.

Bursts: a person saving a task again and again, or Planfix sending a scenario's backlog one
request after another, would cost one run (a read and a write) per event, since a run takes
milliseconds. So an event for a task that had one within HOT_WINDOW_MS queues its job
COALESCE_DELAY_S late: the rest of the burst joins that job, and the burst costs two runs. A
lone change (the common case) is queued at once.

Batches: a lone change does not get a job of its own either. Its task joins its link side's dirty
set, and one batch job (workers.tasks.sync_batch) syncs the tasks waiting there, a batch at a
time with one read of their source tasks, until none waits; only the event that finds no batch
job queued or running for its side sends one. Under load a job then serves many events, so
neither Celery nor Planfix is paid per event. All of it (the hint, the burst marker, the pending
flag, the dirty set, the batch flag) is decided in one Lua script, one round trip.

Holds: while an account's day would outrun its quota (crosslink.queue.coalesce), an event's task waits
in the dirty set due the hold later (its score is when it is due), and a batch job it sends is due
then too; a burst's job waits the hold if that is longer. Further events for the task within the
hold find its pending flag set and join that run. Batch jobs claim only tasks that are due
(workers.tasks), and hand their side to a job due when the next held task is.
"""

from __future__ import annotations

import time
import uuid

import redis
from celery import Celery
from celery.signals import before_task_publish

from crosslink.queue.coalesce import AccountHolds
from crosslink.queue.names import (
    FULL_HINT,
    STAMP_RECEIVER_UID,
    SYNC_BATCH,
    SYNC_QUEUE,
    SYNC_TASK,
    batch_due_key,
    batch_key,
    claims_key,
    dirty_key,
    hints_key,
    pending_key,
    pending_since_key,
    recent_key,
    resume_key,
    stamp_enqueue_time,
)

# The pending flag must not outlive a lost job for long: after this, a new event queues again.
PENDING_TTL_S = 900
# Two events for one task this close together are a burst (people rarely save twice within it;
# a scenario backlog does).
HOT_WINDOW_MS = 500
# How long the job of a burst's second event waits for the rest of the burst to join it.
COALESCE_DELAY_S = 0.5

# KEYS: hints, recent, pending, dirty, batch, pending-since, resume. ARGV: hint, pending TTL (s), hot
# window (ms), task, job id, hold (ms: the task is due that much later). Returns {what, job}:
# COALESCED (a run of this task is already waiting), BURST (send the task's own job, late), JOINED
# (the task joined the batch job JOB, already queued) or BATCH (send batch job JOB). A new event
# voids the reads a waiting run of the task kept (workers.tasks): they predate it.
ENQUEUE_LUA = """
redis.call('DEL', KEYS[7])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local hot = redis.call('SET', KEYS[2], '1', 'PX', ARGV[3], 'GET')
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then
  return {0, false}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[6], now, ARGV[4])
if hot then
  return {1, false}
end
redis.call('ZADD', KEYS[4], 'NX', now + tonumber(ARGV[6]), ARGV[4])
local queued = redis.call('GET', KEYS[5])
if queued then
  return {2, queued}
end
redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[2])
return {3, ARGV[5]}
"""
COALESCED, BURST, JOINED, BATCH = 0, 1, 2, 3
# The decisions after which settle() sends a job.
SENDS_JOB = (BURST, BATCH)
# A run that must wait for its account's turn goes back to its side's dirty set, as if its events
# had just come, and no job is sent for it alone: the side's batch job, due at the turn the
# limiter reserved, takes it up (one wake per turn, not a re-queue per waiting run and second).
# KEYS: hints, pending, dirty, batch, pending-since, resume, batch-due. ARGV: pending TTL (s), task,
# the job to send if none is due (id), the waiting batch job's own id (or ""), the hint that
# resumes the kept reads (or "": read afresh), the wait (ms), then the run's hints. Returns 1:
# send job ARGV[3] (due then); 2: the calling batch job holds the side's flag (it hands it on,
# due at the turn); 0: another job is due. Events that came since the run took its hints void its
# kept reads (the producer's script deletes them as they come). The task keeps its place in the
# dirty set, or takes an earlier one: an event that came during the run and was held (its task due
# later) waits no longer than the run it joins.
_WAIT_LUA = """
local fresh = redis.call('LLEN', KEYS[1]) == 0
for i = 7, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
if ARGV[5] ~= '' and fresh then
  redis.call('RPUSH', KEYS[1], ARGV[5])
else
  redis.call('DEL', KEYS[6])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[3], 'LT', now, ARGV[2])
redis.call('ZADD', KEYS[5], now, ARGV[2])
local holder = redis.call('GET', KEYS[4])
if holder then
  if holder == ARGV[4] then return 2 end
  return 0
end
redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[1])
redis.call('SET', KEYS[7], string.format('%.0f', now + tonumber(ARGV[6])), 'EX', ARGV[1])
return 1
"""
WAIT_SEND, WAIT_HAND_OFF = 1, 2

# KEYS: pending-since, dirty, claims. ARGV: cutoff (ms), now (ms), the side's pending key pattern
# (string.format, task). The tasks whose flag was set before the cutoff and is still set, and
# that wait neither in the side's dirty set nor claimed there (those are the side's batch job's:
# send_batch); they count as set now, so each is sent again once per staleness at most. Entries
# whose flag is gone are dropped.
_STALE_PENDING_LUA = """
local out = {}
for _, task in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  if redis.call('EXISTS', string.format(ARGV[3], task)) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[2], task)
    if not redis.call('ZSCORE', KEYS[2], task) and redis.call('HEXISTS', KEYS[3], task) == 0 then
      out[#out + 1] = task
    end
  else
    redis.call('ZREM', KEYS[1], task)
  end
end
return out
"""
# KEYS: batch, batch-due. ARGV: the running job's id, the next job's id, flag TTL (s), the next
# job's countdown (ms). 1 when the flag passed.
_HAND_OFF_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('SET', KEYS[2], string.format('%.0f', now + tonumber(ARGV[4])), 'EX', ARGV[3])
return 1
"""


def enqueue_call(link: str, side: str, task: int, hint: str, job_id: str,
                 hold_s: float = 0.0) -> tuple[list[str], list]:
    """The enqueue script's KEYS and ARGV for one event whose task's run is held HOLD_S
    (Enqueuer.queue runs it on its client, the webhook receiver on its asyncio one)."""
    keys = [hints_key(link, side, task), recent_key(link, side, task), pending_key(link, side, task),
            dirty_key(link, side), batch_key(link, side), pending_since_key(link, side),
            resume_key(link, side, task)]
    return keys, [hint, PENDING_TTL_S, HOT_WINDOW_MS, task, job_id, int(hold_s * 1000)]


before_task_publish.connect(stamp_enqueue_time, weak=False, dispatch_uid=STAMP_RECEIVER_UID)


def make_celery(redis_url: str) -> Celery:
    """A Celery app used only to send tasks by name."""
    app = Celery("crosslink-producer", broker=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)
    return app


class Enqueuer:
    """Sends sync jobs. With HOLDS (the producer's), each event's run is held as long as its link
    side's accounts call for (crosslink.queue.coalesce); without, never (the workers' hand-offs, the
    poller's runs, operator commands)."""

    def __init__(self, redis_url: str, holds: AccountHolds | None = None):
        self.holds = holds
        self.redis = redis.Redis.from_url(redis_url)
        self.celery = make_celery(redis_url)
        self._enqueue = self.redis.register_script(ENQUEUE_LUA)
        self._hand_off = self.redis.register_script(_HAND_OFF_LUA)
        self._stale_pending = self.redis.register_script(_STALE_PENDING_LUA)
        self._wait = self.redis.register_script(_WAIT_LUA)

    def sync(self, link: str, side: str, task: int, hint: str = FULL_HINT) -> bool:
        """Queue a sync of SIDE's TASK unless one is already waiting; True if queued (see queue)."""
        return self.queue(link, side, task, hint) is not None

    def queue(self, link: str, side: str, task: int, hint: str = FULL_HINT,
              job_id: str | None = None) -> str | None:
        """Queue a sync of SIDE's TASK unless one is already waiting: the Celery id of the job that
        will run it (JOB_ID when this event sends the job), None when one was already waiting.
        HINT says what changed (crosslink.queue.names.event_hint); callers that do not know ask for a
        full look. The producer logs the id, so an event can be followed into the worker's lines."""
        job_id = job_id or str(uuid.uuid4())
        hold_s = self.hold_s(link, side)
        keys, args = enqueue_call(link, side, task, hint, job_id, hold_s)
        what, queued = self._enqueue(keys=keys, args=args)
        return self.settle(link, side, task, job_id, what, queued, hold_s)

    def hold_s(self, link: str, side: str) -> float:
        """How long an event's run on LINK's SIDE is held now (crosslink.queue.coalesce; 0 without holds)."""
        return self.holds.side_hold_s(link, side) if self.holds else 0.0

    def settle(self, link: str, side: str, task: int, job_id: str, what: int, queued: bytes | str | None,
               hold_s: float = 0.0) -> str | None:
        """What queue() returns once the enqueue script decided WHAT (for the event whose job
        would be JOB_ID, its run held HOLD_S): sends the job when the decision calls for one
        (BURST, BATCH; only then does this make any I/O), due at the hold's end."""
        if what == COALESCED:
            return None
        if what == JOINED:
            return queued.decode() if isinstance(queued, bytes) else str(queued)
        try:
            if what == BURST:
                self.celery.send_task(SYNC_TASK, args=[link, side, task], queue=SYNC_QUEUE, task_id=job_id,
                                      countdown=max(COALESCE_DELAY_S, hold_s))
            else:
                self._send_batch_job(link, side, job_id, hold_s)
        except Exception:
            # No job went out: flags left behind would swallow this task's events (and the
            # sender's retry of this one) until they expired. Best effort: Redis may be the
            # failure. A task left in the dirty set goes with the side's next batch.
            try:
                self.redis.delete(pending_key(link, side, task), *([batch_key(link, side)] if what == BATCH else []))
            except redis.RedisError:
                pass
            raise
        return job_id

    def send_batch(self, link: str, side: str, stale_s: float | None = None) -> str | None:
        """Send a batch job for SIDE if tasks wait in its dirty set or claims (a batch job that
        died leaves its tasks claimed, to be claimed again once the claims lapse) and none is
        queued: its id, or None. With STALE_S, a queued job counts as lost once a task has waited
        longer than that, and the side's job was due longer ago than that too (its message may be
        gone with a Redis restart that kept the flag); a second job is harmless, as claims keep
        two jobs off one task."""
        dirty = dirty_key(link, side)
        if not self.redis.exists(dirty, claims_key(link, side)):
            return None
        job_id = str(uuid.uuid4())
        first = self.redis.zrange(dirty, 0, 0, withscores=True)
        if not self.redis.set(batch_key(link, side), job_id, nx=True, ex=PENDING_TTL_S):
            # Waiting since a task came, or since the side's job was due, whichever is later: a
            # backlog waiting its turns has a job due at each (hand_off_batch).
            due = self.redis.get(batch_due_key(link, side))
            waited_s = time.time() - max(first[0][1], float(due or 0)) / 1000 if first else 0.0
            if stale_s is None or waited_s <= stale_s:
                return None
            self.redis.set(batch_key(link, side), job_id, ex=PENDING_TTL_S)
        # Due when the first task is: a held one only at its hold's end (claims skip it till
        # then); at once when claims may have lapsed.
        now_ms = time.time() * 1000
        held = first and not self.redis.exists(claims_key(link, side))
        due_ms = max(now_ms, first[0][1]) if held else now_ms
        self.redis.set(batch_due_key(link, side), int(due_ms), ex=PENDING_TTL_S)
        self._send_batch_job(link, side, job_id, (due_ms - now_ms) / 1000)
        return job_id

    def recover_pending(self, link: str, side: str, stale_s: float) -> list[int]:
        """Send SIDE's task its job again where its pending flag has been set for longer than
        STALE_S with no job beginning (its job message was lost; see
        crosslink.queue.names.PENDING_SINCE_KEY), unless it waits for its side's batch job, in the dirty
        set or claimed (send_batch tells whether that job was lost): the tasks sent. The job
        takes the flag and the events' hints as any does; should the lost one turn up after
        all, it finds them taken and looks in full, which costs reads but loses nothing."""
        now_ms = time.time() * 1000
        stale = self._stale_pending(keys=[pending_since_key(link, side), dirty_key(link, side),
                                          claims_key(link, side)],
                                    args=[now_ms - stale_s * 1000, now_ms, pending_key(link, side, "%s")])
        tasks = sorted(int(task) for task in stale)
        for task in tasks:
            self.celery.send_task(SYNC_TASK, args=[link, side, task], queue=SYNC_QUEUE)
        return tasks

    def wait_for_turn(self, link: str, side: str, task: int, hints: list[str], resume: str, wait_s: float,
                      job_id: str = "") -> bool:
        """A run of SIDE's TASK must wait WAIT_S for its account's turn: it goes back among the
        side's waiting tasks with its HINTS (RESUME, the hint that says so, unless "": its kept
        reads serve its next run unless an event comes first), and the side's batch job is sent, due then, unless one is due already
        (_WAIT_LUA). JOB_ID: the batch job the run was part of ("" for none). True when that
        job holds the side's flag: it must hand it on, due then, itself (hand_off_batch)."""
        next_job = str(uuid.uuid4())
        keys = [hints_key(link, side, task), pending_key(link, side, task), dirty_key(link, side),
                batch_key(link, side), pending_since_key(link, side), resume_key(link, side, task),
                batch_due_key(link, side)]
        answer = self._wait(keys=keys, args=[PENDING_TTL_S, task, next_job, job_id, resume, int(wait_s * 1000), *hints])
        if answer == WAIT_SEND:
            self._send_holding_flag(link, side, next_job, wait_s)
        return answer == WAIT_HAND_OFF

    def hand_off_batch(self, link: str, side: str, job_id: str, countdown_s: float = 0.0,
                       next_id: str | None = None, retries: int = 0) -> str | None:
        """The running batch job JOB_ID ends its turn with tasks still waiting: the side's batch
        flag passes to a new job at the back of the queue, so other sides' jobs get their turns,
        or, when its link's slot is not near (or its runs had to wait for their account's turn),
        to a job due COUNTDOWN_S from now, at the slot its link holds (its id; None when JOB_ID no
        longer held the flag, and no job was sent). NEXT_ID: the next job's id (JOB_ID itself when
        a job that only waited continues as itself: workers.continuation), its RETRIES those
        it continued so far."""
        new_id = next_id or str(uuid.uuid4())
        if not self._hand_off(keys=[batch_key(link, side), batch_due_key(link, side)],
                              args=[job_id, new_id, PENDING_TTL_S, int(countdown_s * 1000)]):
            return None
        self._send_holding_flag(link, side, new_id, countdown_s, retries)
        return new_id

    def _send_holding_flag(self, link: str, side: str, job_id: str, countdown_s: float, retries: int = 0) -> None:
        """Send the batch job JOB_ID, to which the side's batch flag was just given. If it cannot
        be sent, no job is due: the flag is dropped, so the side's next event (or the tick's
        send_batch, the poller's meanwhile) sends one."""
        try:
            self._send_batch_job(link, side, job_id, countdown_s, retries)
        except Exception:
            try:
                self.redis.delete(batch_key(link, side))
            except redis.RedisError:
                pass
            raise

    def help_batch(self, link: str, side: str) -> str:
        """Send a batch job for SIDE beside the one running there, without its flag: it claims
        one batch and ends (workers.tasks.sync_batch). Its id."""
        job_id = str(uuid.uuid4())
        self._send_batch_job(link, side, job_id)
        return job_id

    def _send_batch_job(self, link: str, side: str, job_id: str, countdown_s: float = 0.0, retries: int = 0) -> None:
        self.celery.send_task(SYNC_BATCH, args=[link, side], queue=SYNC_QUEUE, task_id=job_id,
                              countdown=countdown_s or None, retries=retries)

    def close(self) -> None:
        self.redis.close()
        self.celery.close()
