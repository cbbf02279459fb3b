"""One request budget per Planfix account, shared by every process that talks to it.

Planfix allows each account 1 request per second and a daily quota (20k/50k/100k by plan;
API-NOTES section 1). Celery's own rate_limit counts per worker, so it cannot enforce an
account-wide limit: several workers, the poller and the CLI all spend the same budget. This
module keeps that budget in Redis:

- a token bucket (GCRA form: one "theoretical arrival time" per account) decided inside ONE Lua
  script that reads Redis `TIME`, so callers' clocks never matter and no two processes can both
  take the same slot;
- a per-UTC-day request counter against the daily quota;
- a shared pause (`block_until`): when Planfix answers code 22 (quota) or 429, every process
  waits, not only the one that got the answer;
- a floor from answers (`answered`): Planfix counts a request when it *arrives*, and a grant is
  not an arrival. Between the two lie the sender's scheduling, the network and the server's own
  queue before it takes the time; when one request spends more there than the next, the two
  arrive closer than the grants were (the full bench's fairness phase saw 6 answers 429 with
  grants 1.05 s apart: its emulator shares one interpreter with the other stack's and the
  bench's busy threads, and a stand-in for that held a request up to 0.2 s before the emulator
  took its time, however promptly it was sent). Whatever the delay, a request
  has arrived by the time its answer is back, so the client reports each answer and the next
  grant comes no sooner than one whole interval (1/rate) after it. Grants stay 1/rate x
  (1 + safety) apart as before; the floor only holds the next one back after a slow exchange;
- fair turns between *lanes* (one per link): a partner account serves many links, and a busy
  link must not starve a quiet one. A caller that must wait is given a reservation: the next
  free slot of the account's calendar, held for its lane. A lane holds at most one reservation
  per account, so while several lanes wait, slots go to them in turn, round-robin; a lane alone
  gets every slot (the scheduler is work-conserving). A reservation not claimed within
  RESERVATION_GRACE_MS of its slot lapses, so a job that died cannot hold a slot for ever.

And what the day's count says ahead of time: `forecast_day_requests` (pure) projects it to the
end of the UTC day at the pace so far, for `crosslink status`, the metrics, and callers that
spend less when the quota would not last the day.

`acquire` never sleeps: a worker that must wait is told how long (`Permit.wait_ms`) and re-queues
itself for its reservation instead of holding a worker slot. `acquire_blocking` sleeps, for CLI
callers. `peek` takes nothing and holds nothing: it says how soon a lane's next slot comes and how
many it may take then, so a job can leave work it could not start yet unstarted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

# Network jitter can shift two requests sent exactly 1/rate apart into one server-side
# 1-second window; stretching the interval by a few percent keeps them apart.
DEFAULT_SAFETY = 0.05
# Documented Planfix limits (API-NOTES section 1): 1 request/s, 20,000 requests/day on the
# smallest plan.
DEFAULT_RATE_PER_S = 1.0
DEFAULT_DAILY_QUOTA = 20_000
# Per-account state outlives a quiet spell but not an abandoned account: two days covers the
# daily counter of "today" and a pause set late yesterday.
STATE_TTL_MS = 2 * 86_400 * 1000
# acquire_blocking never sleeps in one piece longer than this, so it re-reads the shared
# state (a pause lifted, an override changed) at least this often.
MAX_SLEEP_SLICE_S = 1.0
# A reservation is honoured this long after its slot: a re-queued job arrives a little late
# (broker, a busy pool), but one that never comes must not hold its lane's turn for ever.
RESERVATION_GRACE_MS = 5000
# The lane of callers that name none (operator commands).
DEFAULT_LANE = "_"
# The daily quota is counted per UTC day (the Lua script's `day`).
DAY_S = 86_400
# The day's forecast takes the pace over at least this long: a burst in the first minutes of the
# UTC day (a backfill, the polls after a restart) is not the pace of the whole day.
FORECAST_MIN_WINDOW_S = 3600.0

REASON_RATE = "rate"
REASON_QUOTA = "daily_quota"

# The account's limits and state as both scripts below read them (KEYS and ARGV 1-4 as theirs):
# Redis's clock (now, day), the limits in force (the overrides over ARGV's defaults), the state
# hash `st` and today's count.
_STATE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local day = math.floor(tonumber(t[1]) / 86400)
local conf = redis.call('HMGET', KEYS[2], 'rate_per_s', 'burst', 'daily_quota')
local rate = tonumber(conf[1] or ARGV[1])
local burst = tonumber(conf[2] or ARGV[2])
local quota = tonumber(conf[3] or ARGV[3])
local safety = tonumber(ARGV[4])
local st = redis.call('HMGET', KEYS[1], 'tat', 'day', 'count', 'blocked_until', 'blocked_reason', 'last', 'after')
local tat = tonumber(st[1]) or 0
-- No grant before this: one interval after the latest answer (_ANSWERED_LUA), burst 1 only.
local after = tonumber(st[7]) or 0
local count = tonumber(st[3]) or 0
if tonumber(st[2]) ~= day then count = 0 end
"""

# KEYS[1] state hash (tat_us, day, count, blocked_until_us, blocked_reason, last_us, after_us);
# KEYS[2] overrides; KEYS[3] reservations (lane -> slot_us).
# ARGV: default rate_per_s, burst, daily_quota, safety, ttl_ms, lane, grace_us.
# Returns {go, wait_ms, reason, used_today, redis_now_us}.
#
# `tat` is the account's calendar: the next slot nobody holds. A lane with no reservation takes
# the slot at max(tat, now) (at once if within the burst tolerance, else as a reservation it
# must come back for); a lane with one is granted when its slot has come. `last` is the time of
# the latest grant: with no burst allowed, no two grants are closer than the interval, so a job
# that claims its slot late never puts two requests into one of Planfix's seconds together with
# the next lane's on-time claim. `after` is the floor from the latest answer (_ANSWERED_LUA): the
# calendar restarts there when it would run ahead of it.
_ACQUIRE_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
""" + _STATE_LUA + """
local blocked = tonumber(st[4]) or 0
if blocked > now then
  return {0, math.ceil((blocked - now) / 1000), st[5] or 'daily_quota', count, now}
end
if quota and quota > 0 and count >= quota then
  local next_day = (day + 1) * 86400 * 1000000
  return {0, math.ceil((next_day - now) / 1000), 'daily_quota', count, now}
end
if rate and rate > 0 then
  local interval = 1000000 / rate * (1 + safety)
  if burst < 1 then burst = 1 end
  local tolerance = (burst - 1) * interval
  local lane = ARGV[6]
  local grace = tonumber(ARGV[7])
  local spacing = interval
  local last = tonumber(st[6]) or 0
  local held = tonumber(redis.call('HGET', KEYS[3], lane))
  if held and held + grace < now then
    redis.call('HDEL', KEYS[3], lane)
    held = nil
  end
  if held then
    local due = held - tolerance
    if burst <= 1 and last + spacing > due then due = last + spacing end
    if burst <= 1 and after > due then due = after end
    if due > now then
      return {0, math.ceil((due - now) / 1000), 'rate', count, now}
    end
    redis.call('HDEL', KEYS[3], lane)
  else
    if tat < now then tat = now end
    if burst <= 1 and tat < after then tat = after end
    local due = tat - tolerance
    if burst <= 1 and last + spacing > due then due = last + spacing end
    tat = tat + interval
    redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat))
    if due > now then
      redis.call('HSET', KEYS[3], lane, string.format('%.0f', due + tolerance))
      redis.call('PEXPIRE', KEYS[3], ARGV[5])
      redis.call('PEXPIRE', KEYS[1], ARGV[5])
      return {0, math.ceil((due - now) / 1000), 'rate', count, now}
    end
  end
end
count = count + 1
redis.call('HSET', KEYS[1], 'day', day, 'count', count, 'last', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, 0, false, count, now}
"""

# A request granted by _ACQUIRE_LUA was answered (KEYS and ARGV 1-5 as _ACQUIRE_LUA's): it has
# reached Planfix by now, so no grant comes before now + 1/rate (the plain interval: this bound
# is exact, it needs no safety). The floor only ever rises; with a burst allowance or no rate
# limit there is none. Returns the floor in force (epoch us), 0 when none.
_ANSWERED_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
""" + _STATE_LUA + """
if not rate or rate <= 0 or burst > 1 then return 0 end
local floor = now + 1000000 / rate
if floor > after then
  redis.call('HSET', KEYS[1], 'after', string.format('%.0f', floor))
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  after = floor
end
return string.format('%.0f', after)
"""

# KEYS[1] state hash; ARGV: pause in ms, reason, ttl. A pause only ever extends.
_BLOCK_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1]) * 1000
local current = tonumber(redis.call('HGET', KEYS[1], 'blocked_until')) or 0
if untl > current then
  redis.call('HSET', KEYS[1], 'blocked_until', string.format('%.0f', untl), 'blocked_reason', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[3]), tonumber(ARGV[1]) + 60000))
return math.ceil((math.max(untl, current) - now) / 1000)
"""


def forecast_day_requests(used_today: float, elapsed_s: float, *,
                          min_window_s: float = FORECAST_MIN_WINDOW_S, day_s: float = DAY_S) -> float:
    """The requests an account will have made by the end of the UTC day if it goes on at the
    pace it has kept so far: USED_TODAY requests in the ELAPSED_S seconds since 00:00 UTC.

    Pure (no clock, no Redis): the caller passes the limiter's count and Redis's time of day
    (`AccountLimiter.usage` gives both). The pace is USED_TODAY over the time elapsed, but
    over no less than MIN_WINDOW_S: early in the day the forecast is damped instead of
    multiplying the first minutes' requests by the whole day (60 requests in the first minute
    forecast about 1,500 for the day, not 86,400). From MIN_WINDOW_S on it is the plain linear
    projection, used_today * day_s / elapsed_s. What holds, for callers that decide by it:
    - never below USED_TODAY, and equal to it once the day has ended (ELAPSED_S >= DAY_S);
    - 0 for an account that has made no request;
    - more requests so far never forecast fewer (monotone in USED_TODAY), and the same
      requests later in the day never forecast more (non-increasing in ELAPSED_S);
    - not capped at the quota: a forecast above it says the quota runs out before midnight
      at this pace (the limiter then refuses until 00:00 UTC).
    """
    if used_today < 0:
        raise ValueError(f"used_today must be >= 0, got {used_today}")
    if elapsed_s < 0:
        raise ValueError(f"elapsed_s must be >= 0, got {elapsed_s}")
    if not 0 < min_window_s <= day_s:
        raise ValueError(f"min_window_s must be in (0, day_s], got {min_window_s}")
    elapsed = min(float(elapsed_s), float(day_s))
    pace = used_today / max(elapsed, min_window_s)
    return used_today + pace * (day_s - elapsed)


# What acquire would decide for a lane, read only (no slot taken, no reservation made). KEYS as
# _ACQUIRE_LUA; ARGV: default rate_per_s, burst, daily_quota, safety, lane, grace_us. Returns
# {wait_ms, free, reason, held, interval_us, others}: the wait until the lane's next slot, how
# many slots it may take one after another from then (-1: no rate limit and no quota), whether
# the lane holds a reservation, the interval between grants (0: no rate limit) and how many other
# lanes hold one (they take turns with it). The rules are _ACQUIRE_LUA's, in the same order.
_PEEK_LUA = _STATE_LUA + """
local blocked = tonumber(st[4]) or 0
if blocked > now then
  return {math.ceil((blocked - now) / 1000), 0, st[5] or 'daily_quota', 0, 0, 0}
end
local left = -1
if quota and quota > 0 then
  left = quota - count
  if left <= 0 then
    local next_day = (day + 1) * 86400 * 1000000
    return {math.ceil((next_day - now) / 1000), 0, 'daily_quota', 0, 0, 0}
  end
end
if not rate or rate <= 0 then
  return {0, left, false, 0, 0, 0}
end
local interval = 1000000 / rate * (1 + safety)
if burst < 1 then burst = 1 end
local tolerance = (burst - 1) * interval
local last = tonumber(st[6]) or 0
local held, others = nil, 0
local lanes = redis.call('HGETALL', KEYS[3])
for i = 1, #lanes, 2 do
  local slot = tonumber(lanes[i + 1])
  if slot and slot + tonumber(ARGV[6]) >= now then
    if lanes[i] == ARGV[5] then held = slot else others = others + 1 end
  end
end
local due, free
if held then
  due = held - tolerance
  free = 1
else
  local from = math.max(tat, now)
  if burst <= 1 and from < after then from = after end
  due = from - tolerance
  free = math.min(burst, math.floor((math.max(due, now) + tolerance - from) / interval) + 1)
end
if burst <= 1 and last + interval > due then due = last + interval end
if burst <= 1 and after > due then due = after end
if left >= 0 and free > left then free = left end
return {math.max(0, math.ceil((due - now) / 1000)), free, 'rate', held and 1 or 0, math.floor(interval), others}
"""


@dataclass(frozen=True)
class Outlook:
    """What an account's budget holds for a lane (AccountLimiter.peek); nothing was taken."""

    # How long until the lane's next slot (0: now), and why it must wait ("rate" |
    # "daily_quota"; None without a rate limit).
    wait_ms: int
    reason: str | None
    # How many slots the lane may take one after another once the wait is over (more than one
    # only with a burst allowance); None: no limit at all.
    free: int | None
    # Whether the lane holds a reservation (the next slot is its own, whoever else waits).
    held: bool
    # The spacing of grants (0: no rate limit), and how many other lanes hold a reservation:
    # while they wait, the lane gets one slot in every (others + 1).
    interval_s: float = 0.0
    others: int = 0


@dataclass(frozen=True)
class Permit:
    """The limiter's answer: go now, or wait `wait_ms` for `reason` ("rate" | "daily_quota")."""

    go: bool
    wait_ms: int = 0
    reason: str | None = None
    used_today: int = 0
    # Redis's clock (epoch microseconds) when the decision was taken: grants can be compared
    # across processes without trusting anyone's local clock.
    at_us: int = 0

    def __bool__(self) -> bool:
        return self.go


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


class AccountLimiter:
    """Token bucket + daily quota per account, in Redis, safe across threads and processes."""

    def __init__(self, redis_client: redis.Redis, rate_per_s: float = DEFAULT_RATE_PER_S,
                 burst: int = 1, daily_quota: int | None = DEFAULT_DAILY_QUOTA,
                 safety: float = DEFAULT_SAFETY, prefix: str = "crosslink:limiter"):
        if rate_per_s is not None and rate_per_s < 0:
            raise ValueError(f"rate_per_s must be >= 0 (0 turns the rate limit off), got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if safety < 0:
            raise ValueError(f"safety must be >= 0, got {safety}")
        self.redis = redis_client
        self.rate_per_s = float(rate_per_s or 0)
        self.burst = int(burst)
        self.daily_quota = int(daily_quota or 0)
        self.safety = float(safety)
        self.prefix = prefix
        self._acquire = redis_client.register_script(_ACQUIRE_LUA)
        self._block = redis_client.register_script(_BLOCK_LUA)
        self._answered = redis_client.register_script(_ANSWERED_LUA)
        self._peek = redis_client.register_script(_PEEK_LUA)

    def __repr__(self) -> str:
        return (f"AccountLimiter(rate_per_s={self.rate_per_s}, burst={self.burst}, "
                f"daily_quota={self.daily_quota}, safety={self.safety}, prefix={self.prefix!r})")

    def _keys(self, account: str) -> list[str]:
        return [f"{self.prefix}:{account}:state", f"{self.prefix}:{account}:conf",
                f"{self.prefix}:{account}:lanes"]

    def interval_s(self, account: str | None = None) -> float:
        """The minimum spacing between two grants for ACCOUNT (its override, else the default)."""
        rate = self.limits(account)["rate_per_s"] if account else self.rate_per_s
        return (1.0 / rate) * (1.0 + self.safety) if rate else 0.0

    # -- the budget ------------------------------------------------------------------------
    def acquire(self, account: str, lane: str = DEFAULT_LANE) -> Permit:
        """Take one request slot for ACCOUNT now, or say how long to wait. Never sleeps.

        A refusal for rate holds the next free slot for LANE: the caller that comes back after
        `wait_ms` (this one, or another of the same lane) is granted it. Each lane holds one
        slot at a time, so lanes take turns.
        """
        go, wait_ms, reason, used, at_us = self._acquire(
            keys=self._keys(account),
            args=[self.rate_per_s, self.burst, self.daily_quota, self.safety, STATE_TTL_MS,
                  lane, RESERVATION_GRACE_MS * 1000],
        )
        reason = _text(reason) if reason else None
        return Permit(go=bool(int(go)), wait_ms=int(wait_ms), reason=reason, used_today=int(used),
                      at_us=int(at_us))

    def answered(self, account: str) -> int:
        """A request to ACCOUNT that acquire granted has been answered (or given up on after it
        was sent): hold the next grant back to one interval (1/rate) after now.

        Why: Planfix counts a request when it arrives, which is some unknown time after its
        grant (module docstring); by the time its answer is back it has surely arrived, so
        grants kept an interval after the answers can never arrive closer than that, however
        late one went out. Call it as soon as the answer is in: it must land before the next
        grant is decided (one interval after this one's), or that grant has only the safety
        margin. Assumes only that Redis's clock and Planfix's run at the rate of real time (no
        step between the two readings): the floor and the next grant are both Redis's readings,
        and the arrival came before the first of them. Returns the floor in force (Redis epoch
        us; 0: none, the account has no rate limit or a burst allowance).
        """
        return int(self._answered(
            keys=self._keys(account),
            args=[self.rate_per_s, self.burst, self.daily_quota, self.safety, STATE_TTL_MS]))

    def peek(self, account: str, lane: str = DEFAULT_LANE) -> Outlook:
        """How soon LANE's next slot for ACCOUNT comes, and how many it may take then, as acquire
        would decide now; reads only: no slot is taken and no reservation made (a caller that
        wants the slot held asks acquire, whose refusal reserves it). Other lanes may take a
        slot that LANE does not hold in the meantime."""
        wait_ms, free, reason, held, interval_us, others = self._peek(
            keys=self._keys(account),
            args=[self.rate_per_s, self.burst, self.daily_quota, self.safety, lane, RESERVATION_GRACE_MS * 1000],
        )
        free = int(free)
        return Outlook(wait_ms=int(wait_ms), reason=_text(reason) if reason else None,
                       free=None if free < 0 else free, held=bool(int(held)),
                       interval_s=int(interval_us) / 1e6, others=int(others))

    def acquire_blocking(self, account: str, max_wait_s: float, lane: str = DEFAULT_LANE) -> Permit:
        """Wait up to MAX_WAIT_S for a slot, sleeping between tries (CLI use, not workers).

        Returns the granted permit, or the refusal as soon as the wait it names would end after
        the deadline (no point sleeping towards a slot we will not be allowed to wait for).
        """
        deadline = time.monotonic() + max_wait_s
        while True:
            permit = self.acquire(account, lane)
            if permit.go:
                return permit
            remaining = deadline - time.monotonic()
            if permit.wait_ms / 1000.0 > remaining:
                return permit
            time.sleep(min(permit.wait_ms / 1000.0, MAX_SLEEP_SLICE_S, max(remaining, 0.0)))

    def block_until(self, account: str, seconds: float, reason: str = REASON_QUOTA) -> int:
        """Pause every process's requests to ACCOUNT for SECONDS from Redis's now.

        Used on Planfix code 22 (timeToReset) and HTTP 429. A pause only extends an existing
        one, never shortens it. Returns the pause now in force, in ms.
        """
        ms = max(0, int(seconds * 1000))
        return int(self._block(keys=self._keys(account)[:1], args=[ms, reason, STATE_TTL_MS]))

    # -- per-account overrides -------------------------------------------------------------
    def set_account_limits(self, account: str, *, rate_per_s: float | None = None,
                           daily_quota: int | None = None, burst: int | None = None) -> None:
        """Override the defaults for one account (e.g. a plan with a bigger daily quota).

        Stored in Redis, so every process sees it. 0 turns that limit off for the account.
        """
        values: dict[str, Any] = {}
        if rate_per_s is not None:
            if rate_per_s < 0:
                raise ValueError("rate_per_s must be >= 0")
            values["rate_per_s"] = float(rate_per_s)
        if daily_quota is not None:
            if daily_quota < 0:
                raise ValueError("daily_quota must be >= 0")
            values["daily_quota"] = int(daily_quota)
        if burst is not None:
            if burst < 1:
                raise ValueError("burst must be >= 1")
            values["burst"] = int(burst)
        if values:
            self.redis.hset(self._keys(account)[1], mapping=values)

    def clear_account_limits(self, account: str) -> None:
        self.redis.delete(self._keys(account)[1])

    def limits(self, account: str) -> dict[str, float]:
        """The limits in force for ACCOUNT: its overrides over the defaults."""
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(self._keys(account)[1]).items()}
        return {
            "rate_per_s": float(raw.get("rate_per_s", self.rate_per_s)),
            "burst": int(raw.get("burst", self.burst)),
            "daily_quota": int(raw.get("daily_quota", self.daily_quota)),
        }

    # -- observation -----------------------------------------------------------------------
    def usage(self, account: str) -> dict[str, Any]:
        """Requests granted today (UTC), how far into that day Redis's clock is, and any pause
        in force, for status commands and metrics."""
        seconds, micros = self.redis.time()
        now_us = seconds * 1_000_000 + micros
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(self._keys(account)[0]).items()}
        today = seconds // DAY_S
        used = int(raw.get("count", 0)) if int(raw.get("day", -1)) == today else 0
        blocked_us = int(float(raw.get("blocked_until", 0)))
        return {
            "used_today": used,
            "daily_quota": self.limits(account)["daily_quota"],
            # Redis's time into its UTC day, the day the counter counts (forecast_day_requests).
            "day_elapsed_s": seconds % DAY_S + micros / 1_000_000,
            "blocked_ms": max(0, (blocked_us - now_us) // 1000),
            "blocked_reason": raw.get("blocked_reason") if blocked_us > now_us else None,
        }

    def reset(self, account: str) -> None:
        """Forget ACCOUNT's bucket, counter, pause, answer floor and reservations (tests, operator
        repair)."""
        keys = self._keys(account)
        self.redis.delete(keys[0], keys[2])
