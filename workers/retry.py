"""The retry policy as data: what a sync job does after each kind of failure, and how long it waits.

A failed sync run is not one thing. Planfix being down for a moment, Planfix (or our own limiter)
telling us to wait, another run holding the task, Planfix queueing a write for later (HTTP 202),
a request Planfix will never accept, and a token that stopped working each need a different
answer, and mixing them up either loses events or burns the retry budget on waiting. So each kind
gets its own frozen rule here, and `decide` is the one pure function that applies them:

- transient (5xx, timeout): jittered exponential back-off counted from real attempts, capped far
  below the broker's visibility timeout, then a dead letter after `max_attempts`;
- rate limited: wait exactly the time the limiter or Planfix named; not an attempt, because
  nothing failed (only capped, so that a daily-quota pause never outlives the visibility timeout:
  the job then asks the limiter again and waits once more);
- busy (the task pair is locked by another run, or a write lease is held): a short fixed wait,
  not an attempt;
- queued (HTTP 202): the write is not yet seen applied, so the run is repeated after a delay to
  read the task back and plan again (writes are absolute sets, so repeating one is harmless);
- permanent (invalid request, not found): a dead letter with the reason;
- severing (bad token, lost scope or access): the link side is parked until a probe sees access.

The tasks in workers/tasks.py only execute the Decision; nothing here does I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from planfix.errors import PlanfixError, Queued, RateLimited, TransientError
from workers.idempotency import LeaseBusy

# Celery's Redis transport redelivers an unacknowledged message after this (workers.app sets it);
# a countdown at or above it would run the job twice. Kept equal to workers.app by a test.
BROKER_VISIBILITY_TIMEOUT_S = 3600.0
# No countdown of ours may exceed this: a quarter of the visibility timeout leaves room for the
# run itself and for a worker that fetched the message late.
MAX_DELAY_S = BROKER_VISIBILITY_TIMEOUT_S / 4
# A failure reason is shown in `crosslink dlq list`; beyond this it is noise.
MAX_REASON = 300


class FailureKind(str, Enum):
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    QUEUED = "queued"
    PERMANENT = "permanent"
    SEVERING = "severing"


class Action(str, Enum):
    RETRY = "retry"              # run again after delay_s; this counted as an attempt
    WAIT = "wait"                # run again after delay_s; nothing failed, no attempt counted
    VERIFY = "verify"            # run again after delay_s to read a queued write back
    DEAD_LETTER = "dead_letter"  # keep the event with its reason; later events wait behind it
    PARK = "park"                # the link side is severed: park the event, probe after delay_s


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_s: float
    reason: str
    attempt: int  # the attempt number the next run carries (unchanged unless this counted)


# --- the rules, one per kind ------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Transient failures: the ceiling doubles per attempt up to cap_s; the delay is drawn from
    the upper half of the ceiling (jitter spreads the retries of many jobs failed at once, the
    lower bound keeps a retry from coming back immediately)."""

    base_s: float = 2.0
    cap_s: float = 300.0
    max_attempts: int = 8

    def ceiling(self, attempt: int) -> float:
        # 2 ** attempt overflows floats for absurd attempts; the cap is reached long before.
        return min(self.cap_s, self.base_s * (2.0 ** min(attempt, 64)))


@dataclass(frozen=True)
class LimiterWait:
    """Rate limited: the wait is the limiter's or Planfix's own (real time, not scaled)."""

    cap_s: float = MAX_DELAY_S


@dataclass(frozen=True)
class FixedWait:
    """Busy: another run of the same pair takes a few seconds at 1 request/s."""

    delay_s: float = 1.0


@dataclass(frozen=True)
class ReadBack:
    """Queued (202): Planfix applies the change within seconds when the task's scenario is done.
    The read-back waits longer on each repeat, and the repeats share the attempt budget with
    transient failures, so a task Planfix keeps locked ends as a dead letter, not a loop."""

    first_s: float = 5.0
    cap_s: float = 120.0
    max_attempts: int = 8

    def delay(self, attempt: int) -> float:
        return min(self.cap_s, self.first_s * (2.0 ** min(attempt, 64)))


@dataclass(frozen=True)
class ParkAndProbe:
    """Severed: how often a probe checks whether access came back."""

    probe_after_s: float = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    transient: Backoff = field(default_factory=Backoff)
    rate_limited: LimiterWait = field(default_factory=LimiterWait)
    busy: FixedWait = field(default_factory=FixedWait)
    queued: ReadBack = field(default_factory=ReadBack)
    severed: ParkAndProbe = field(default_factory=ParkAndProbe)
    max_delay_s: float = MAX_DELAY_S

    def __post_init__(self) -> None:
        longest = max(self.transient.cap_s, self.rate_limited.cap_s, self.busy.delay_s,
                      self.queued.cap_s, self.severed.probe_after_s)
        if not 0 < self.max_delay_s < BROKER_VISIBILITY_TIMEOUT_S:
            raise ValueError("max_delay_s must stay below the broker's visibility timeout")
        if longest > self.max_delay_s:
            raise ValueError(f"a delay of {longest}s exceeds max_delay_s {self.max_delay_s}s")
        if self.transient.max_attempts < 1 or self.queued.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


POLICY = RetryPolicy()


# --- the decision -----------------------------------------------------------------------------


def failure_kind(error: object) -> FailureKind:
    """The kind of ERROR: a Planfix error, a lease or lock conflict, a Queued outcome, or a
    FailureKind given directly. Anything unknown (a bug in our code) is permanent: retrying the
    same input cannot fix it, and a dead letter keeps the event until someone can."""
    if isinstance(error, FailureKind):
        return error
    if isinstance(error, RateLimited):
        return FailureKind.RATE_LIMITED
    if isinstance(error, TransientError):
        return FailureKind.TRANSIENT
    if isinstance(error, LeaseBusy):
        return FailureKind.BUSY
    if isinstance(error, Queued):
        return FailureKind.QUEUED
    if isinstance(error, PlanfixError) and error.severs_link:
        return FailureKind.SEVERING
    return FailureKind.PERMANENT


def describe(error: object) -> str:
    """A one-line reason. Planfix errors carry messages already scrubbed of tokens."""
    if isinstance(error, FailureKind):
        return error.value
    if isinstance(error, Queued):
        return "Planfix queued the write (HTTP 202)"
    if isinstance(error, PlanfixError):
        text = str(error)
    elif isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    else:
        text = str(error)
    return text[:MAX_REASON]


def _clamp(delay_s: float, policy: RetryPolicy) -> float:
    return min(max(0.0, delay_s), policy.max_delay_s)


def decide(error: object, attempt: int, scale: float = 1.0, *, jitter: float | None = None,
           policy: RetryPolicy = POLICY) -> Decision:
    """What to do after ERROR in the run that carried ATTEMPT (0 for the first run).

    Assumptions: SCALE multiplies our own waits (tests and the demo shrink time), never a wait
    Planfix or the limiter named, which is real time. JITTER in [0, 1] picks the point inside the
    back-off window; None draws one. Every delay lies in [0, policy.max_delay_s], below the
    broker's visibility timeout. Only transient failures and 202 read-backs count an attempt.
    """
    attempt = max(0, int(attempt))
    scale = max(0.0, float(scale))
    kind = failure_kind(error)
    reason = describe(error)
    if kind is FailureKind.RATE_LIMITED:
        wait_s = error.retry_after_ms / 1000.0 if isinstance(error, RateLimited) else 0.0
        return Decision(Action.WAIT, _clamp(min(wait_s, policy.rate_limited.cap_s), policy),
                        reason, attempt)
    if kind is FailureKind.BUSY:
        return Decision(Action.WAIT, _clamp(policy.busy.delay_s * scale, policy), reason, attempt)
    if kind is FailureKind.TRANSIENT:
        rule = policy.transient
        if attempt + 1 >= rule.max_attempts:
            return Decision(Action.DEAD_LETTER, 0.0, f"gave up after {attempt + 1} attempts: {reason}",
                            attempt + 1)
        ceiling = rule.ceiling(attempt)
        share = random.random() if jitter is None else min(1.0, max(0.0, jitter))
        delay = ceiling * (0.5 + 0.5 * share) * scale
        return Decision(Action.RETRY, _clamp(delay, policy), reason, attempt + 1)
    if kind is FailureKind.QUEUED:
        rule = policy.queued
        if attempt + 1 >= rule.max_attempts:
            return Decision(Action.DEAD_LETTER, 0.0,
                            f"write still not seen applied after {attempt + 1} attempts: {reason}",
                            attempt + 1)
        return Decision(Action.VERIFY, _clamp(rule.delay(attempt) * scale, policy), reason, attempt + 1)
    if kind is FailureKind.SEVERING:
        return Decision(Action.PARK, _clamp(policy.severed.probe_after_s * scale, policy), reason, attempt)
    return Decision(Action.DEAD_LETTER, 0.0, reason, attempt)
