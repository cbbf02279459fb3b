"""Quota-aware coalescing: when an account's day would outrun its quota, a task's run waits a
little, so that a person's next edits of the task join it instead of costing runs of their own.

Each Planfix account has a daily quota (API-NOTES section 1); once it is spent, the limiter
refuses every request until 00:00 UTC, which stops every link on the account for hours. A run
costs its reads and writes however many events it carries, and people edit a task in a burst:
the title, then the description, then the assignee, seconds apart. While the day's forecast
(planfix.limiter.forecast_day_requests, the pace so far projected to midnight) stays within the
quota, runs go at once. Once it passes it, each task's run is held (coalesce_hold_s): the task
waits in its side's dirty set due at the hold's end, and the edits made meanwhile join that run
(crosslink.queue.enqueue). Latency is traded for requests only while the quota would not last the day;
the hold in force is shown per account (`crosslink status`, crosslink_account_coalesce_hold_seconds).

A run reads the side's account and writes the other's, so a link side's hold is the larger of its
two accounts' holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from planfix.limiter import AccountLimiter, forecast_day_requests
from schemas.links import Link

# The hold just past the quota. People save the fields of one card a few seconds apart, so a
# hold of a few seconds already merges most of one person's edits into one run.
BASE_HOLD_S = 5.0
# The hold reaches CROSSLINK_COALESCE_MAX_S when the forecast passes the quota by this share of
# it (twice the quota: at that pace the quota runs out by noon UTC); between, it grows linearly.
FULL_HOLD_OVERSHOOT = 1.0
# The forecast moves over hours, while events come many a second: each process reads an account's
# usage (three Redis reads) at most once in this long.
HOLD_CACHE_S = 5.0


def coalesce_hold_s(forecast: float, daily_quota: float, base_hold_s: float, max_hold_s: float) -> float:
    """How long to hold a task's run so that later edits join it, given the account's FORECAST
    of requests by midnight and its DAILY_QUOTA. Pure.

    - 0 while the forecast is within the quota, for no quota (0 or less), and when MAX_HOLD_S is
      0 or less (coalescing off): latency is spent only when the quota would not last the day;
    - past the quota, from BASE_HOLD_S up to MAX_HOLD_S as the overshoot reaches
      FULL_HOLD_OVERSHOOT of the quota, and MAX_HOLD_S beyond;
    - never more than MAX_HOLD_S (a BASE_HOLD_S above it is cut to it); more forecast never
      holds less.

    Assumes edits of one task that come within the hold carry nothing the run could not take
    together (a run reads the task as it is, not event by event)."""
    if daily_quota <= 0 or max_hold_s <= 0 or not forecast > daily_quota:
        return 0.0
    base = min(max(base_hold_s, 0.0), max_hold_s)
    overshoot = (forecast - daily_quota) / (daily_quota * FULL_HOLD_OVERSHOOT)
    if overshoot >= 1.0:
        return max_hold_s  # exactly: base + (max - base) rounds off it
    return min(max_hold_s, base + (max_hold_s - base) * overshoot)


def usage_hold_s(usage: dict, max_hold_s: float, base_hold_s: float = BASE_HOLD_S) -> float:
    """The hold for an account whose limiter usage (AccountLimiter.usage) is USAGE."""
    forecast = forecast_day_requests(int(usage["used_today"]), float(usage["day_elapsed_s"]))
    return coalesce_hold_s(forecast, int(usage["daily_quota"]), base_hold_s, max_hold_s)


class AccountHolds:
    """The hold in force for the runs of each link side of LINKS, read through LIMITER at most
    every CACHE_S per account (one reader per process; safe across threads)."""

    def __init__(self, limiter: AccountLimiter, links: Iterable[Link], max_hold_s: float, *,
                 base_hold_s: float = BASE_HOLD_S, cache_s: float = HOLD_CACHE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.limiter = limiter
        self.max_hold_s = max_hold_s
        self.base_hold_s = base_hold_s
        self.cache_s = cache_s
        self._clock = clock
        # Per link side, the accounts its runs spend on: its own (reads), the other side's (writes).
        self._accounts = {(link.name, side): tuple(dict.fromkeys((conf.account, link.sides[link.other(side)].account)))
                          for link in links for side, conf in link.sides.items()}
        self._read: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def stale(self, link: str, side: str) -> bool:
        """Whether side_hold_s would read Redis now (the receiver then calls it off its event loop)."""
        if self.max_hold_s <= 0:
            return False
        now = self._clock()
        return any(now - self._read.get(account, (float("-inf"), 0.0))[0] >= self.cache_s
                   for account in self._accounts.get((link, side), ()))

    def account_hold_s(self, account: str) -> float:
        """ACCOUNT's hold now (cached for CACHE_S); 0 with coalescing off, without reading."""
        if self.max_hold_s <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            read_at, hold_s = self._read.get(account, (float("-inf"), 0.0))
        if now - read_at < self.cache_s:
            return hold_s
        hold_s = usage_hold_s(self.limiter.usage(account), self.max_hold_s, self.base_hold_s)
        with self._lock:
            self._read[account] = (now, hold_s)
        return hold_s

    def side_hold_s(self, link: str, side: str) -> float:
        """How long a run of LINK's SIDE is held now: the larger of its accounts' holds (0 for a
        link side not configured)."""
        return max((self.account_hold_s(account) for account in self._accounts.get((link, side), ())), default=0.0)
