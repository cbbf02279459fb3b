"""A link side's batch job: claim the waiting tasks its link's slots allow, run them, hand on.

`sync_batch` (workers.tasks) syncs the tasks its link side's lone events left in the dirty set
(crosslink.queue.enqueue). A batch job first asks the account limiter (a peek: nothing taken) how
soon its link's next slots come on the side's account and the other side's, and claims only as
many tasks as the slots of its turn allow, up to BATCH_MAX (one at Planfix's 1 request/s; a full
batch with no limit); it begins their runs in one step (workers.runner.begin_runs), reads all
their source tasks with one request, and then finishes each run as a single job would, the later
ones as their slots come (await_turn, within the turn); then it looks and claims again, until
none waits. When its link's slot is not near, it begins nothing: it holds that slot for its
link's lane (the limiter's reservation, which lanes take in turn) and hands its side on to a job
due then, so a waiting backlog costs one job per turn and no run is begun only to be put back;
a job that only waited is that next job itself (workers.continuation: one row in Flower). A
job whose turn is over while slots are free hands its side to a new job at the back of the
queue, so that one busy link side does not keep a worker slot from the others; with a full batch
more waiting and slots for it, a helper job takes one batch in another slot. A run that must
wait after all (its account's slot was taken meanwhile, it needs more requests than it looked
for) goes back to the dirty set (workers.runner.wait_for_turn) and the side's job is due at its
turn. A task's claim names the job and lapses after CLAIM_TTL_MS (crosslink.queue.claims): a
batch job that died leaves its tasks claimed, and its own message, delivered again, claims them
again at once (any batch job of that side does once they lapse; the poller sends one to every
side with claims or dirty tasks); their runs, whose hints the dead job may have taken, look in
full. A task held for coalescing (crosslink.queue.coalesce: its account's day would outrun its
quota) is due in the dirty set only at its hold's end: no job claims it before, and a job that
finds only held tasks hands its side on to a job due when the first is.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import redis

from crosslink.queue.claims import BATCH_MAX, CLAIM_TTL_MS, MIN_CLAIM_TTL_MS, claim_batch, settle_batch
from crosslink.queue.names import SYNC_BATCH
from planfix.limiter import AccountLimiter, Outlook
from schemas.links import Link
from workers import telemetry
from workers.continuation import as_itself
from workers.idempotency import scaled_ttl_ms
from workers.retry import POLICY
from workers.runner import Begun, begin_runs, finish, read_sources
from workers.runtime import runtime
from workers.sync import ADMISSION_LIMIT_WAIT_S

log = logging.getLogger("crosslink.worker")


# A batch job claims again while tasks wait, for this long; then a new job at the back of the
# queue takes over, so that one busy link side does not keep a worker slot from the others.
BATCH_TURN_S = 1.0


# A batch job begins runs only when its link's next slots are near: on the side's account, where
# a run's first request reads, no further off than that request may wait in the worker slot
# (ADMISSION_LIMIT_WAIT_S); on the other side's, where it writes once that read admitted it, at
# most TURN_SLACK_S (workers.sync lets an admitted run's requests wait longer; this keeps the
# worker slot held a moment only). The side's next job is sent due TURN_LEAD_S before the slot its
# link holds, so that its requests are made on time: the broker and the pool deliver it a little
# late, and a slot granted late before it moves it on by as much (the limiter spaces grants).
TURN_LEAD_S = ADMISSION_LIMIT_WAIT_S / 2


TURN_SLACK_S = 0.25
# A batch job's result names the tasks it synced, up to this many (Flower's result column is one
# line; the worker's log has every run).
SHOWN_TASKS = 12


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


def sync_side(link_name: str, side: str, job_id: str) -> str:
    """Claim and sync batches, as many tasks at a time as its link's slots allow in its turn,
    until none waits; or, while some do, until its link's slots are not near or its turn is over:
    then the side's flag passes to a job due at the slot its link now holds, or, when the slots
    are free, at the back of the queue (other sides' jobs go first). Nothing is begun that would
    only be put back. A helper (a job that does not hold the side) goes on only while a full
    batch more waits. What it returns names the tasks it synced (Flower's result column)."""
    rt = runtime()
    link = rt.link(link_name)
    ttl_ms = scaled_ttl_ms(CLAIM_TTL_MS, MIN_CLAIM_TTL_MS, rt.settings.time_scale)
    turn_ends = time.monotonic() + BATCH_TURN_S
    synced: list[int] = []
    while True:
        turn = turn_outlook(rt.limiter, link, side)
        over = time.monotonic() >= turn_ends
        claim = claim_batch(rt.redis, link_name, side, job_id, ttl_ms, 0 if over else turn.runs)
        if not claim.tasks:
            if claim.owner and claim.left:
                due_s = 0.0 if turn.runs else reserve_turn(rt.limiter, link, turn)
                hand_on(link_name, side, job_id, max(0.0, due_s - TURN_LEAD_S), waited_only=not synced)
                return f"{synced_text(synced)}; the rest wait {due_s:.2f}s for their turn"
            if claim.owner and claim.held_s is not None:
                # Only held tasks wait: the side's next job is due when the first hold ends (no
                # slot is reserved for it meanwhile; that job looks at its turn then).
                hand_on(link_name, side, job_id, claim.held_s, waited_only=not synced)
                return f"{synced_text(synced)}; the rest are held {claim.held_s:.2f}s to coalesce"
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
        waits_s = sync_claimed(link, side, job_id, claim.tasks, paced_until=turn_ends if limited else None)
        synced += claim.tasks
        if waits_s is not None:
            # Runs wait for their account's turn after all: the side's next job is due then, not
            # now (a helper leaves that to the side's own job).
            if claim.owner:
                hand_on(link_name, side, job_id, max(0.0, waits_s - TURN_LEAD_S), waited_only=False)
            break
        if not claim.owner and claim.left < BATCH_MAX:
            break  # a helper helps while a full batch more waits; the side's own job does the rest
    return synced_text(synced)


def hand_on(link_name: str, side: str, job_id: str, countdown_s: float, waited_only: bool) -> None:
    """Pass the side's batch flag from JOB_ID to the side's next job, due COUNTDOWN_S from now. A
    job that WAITED_ONLY (it began no run: its link's slot was not near, or only held tasks
    wait) is that next job itself (workers.continuation): a backlog waiting its turns is then one
    job per slice of work in Flower, not one more per wait."""
    again = as_itself(SYNC_BATCH, link_name, side) if waited_only else None
    if again is None or again.job_id != job_id:
        runtime().enqueuer.hand_off_batch(link_name, side, job_id, countdown_s)
    elif runtime().enqueuer.hand_off_batch(link_name, side, job_id, countdown_s, next_id=job_id,
                                           retries=again.retries + 1):
        again.mark(countdown_s)


def synced_text(numbers: list[int]) -> str:
    """What a batch job says it synced: its tasks by number, the first SHOWN_TASKS of them."""
    if not numbers:
        return "synced none"
    shown = " ".join(f"#{number}" for number in numbers[:SHOWN_TASKS])
    more = f" and {len(numbers) - SHOWN_TASKS} more" if len(numbers) > SHOWN_TASKS else ""
    return f"synced {shown}{more}"


def sync_claimed(link: Link, side: str, job_id: str, numbers: list[int],
                  paced_until: float | None = None) -> float | None:
    """Make the runs of the claimed tasks NUMBERS: begin each, read their sources together,
    finish each (with PACED_UNTIL, a rate-limited link's later runs each when its slots are near,
    waiting for them until then at most: await_turn); then drop the claims of those done.
    Returns, when runs had to wait for their account's turn, the shortest wait (the job then
    hands its side on, due then: sync_side)."""
    rt = runtime()
    done: list[int] = []
    begun: list[Begun] = []
    waits: list[float] = []
    try:
        for number, result in begin_runs(link, side, numbers, job_id):
            if isinstance(result, str):
                telemetry.count_run(link.name, side, result)
                done.append(number)
            else:
                begun.append(result)
        # Read after every run has taken its events: an event after that queues a run of its own.
        prefetched = read_sources(link, side, begun)
        first = True
        while begun:
            if not first and paced_until is not None:
                await_turn(rt.limiter, link, side, paced_until)
            first = False
            run = begun.pop(0)
            with telemetry.sync_run(link.name, side, run.number):
                telemetry.count_run(link.name, side, finish(run, prefetched.get(run.number)))
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
