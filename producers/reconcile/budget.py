"""What an account's reconciliation may spend: how often it is polled, and how many tasks the
comment audit after each poll may list, both shares of the account's daily quota.

The budget (``poll_period_s``): polls of an account may spend RECONCILE_SHARE of its daily quota
(settings, default 5 %): the period is the day divided by the polls that share allows, at the
requests the last poll made, never below the configured floor. The beat ticks more often; the
turn (producers.reconcile.turns) decides which tick polls, and a busy account's poll may wait
(``repair_bound_s`` counts that wait).

The comment audit (producers.reconcile.audit) spends AUDIT_SHARE of the daily quota (settings,
default 1.25 %), a part of the reconciliation's share (the polls have the rest, so a quiet
account pays that share and no more): each poll adds its period's part of that share to a
credit, and the audit lists as many whole tasks as the credit holds, at most AUDIT_MAX_TASKS
(``audit_allowance``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis

from planfix.client import MAX_PAGE_SIZE
from producers.reconcile.accounts import PollAccount, poll_accounts
from producers.reconcile.records import AUDIT_CREDIT_KEY, LAST_POLL_TTL_S, key, read_last_poll
from producers.reconcile.turns import MAX_DEFER_PERIODS
from producers.reconcile.window import TIMEZONE_CACHE_S
from schemas.links import LinksConfig

# The budget. A day, in seconds.
DAY_S = 86400.0
# A quiet poll: one page of the task feed.
QUIET_POLL_REQUESTS = 1
# Requests a day that do not depend on the period: the time zone lookup.
FIXED_REQUESTS_PER_DAY = DAY_S / TIMEZONE_CACHE_S
# What the bound allows a queued run once the poll found its task: a full look's reads and a write.
RUN_REQUESTS = 6
# The most tasks one audit lists (a poll is one Celery job: it must not hold a worker for long).
AUDIT_MAX_TASKS = 20


# ----------------------------------------------------------------------------------------------
# The budget (pure)

def feed_requests(items: int, page_size: int = MAX_PAGE_SIZE) -> int:
    """Requests a paged list of ITEMS costs: the client pages until a short page."""
    return items // page_size + 1


def poll_period_s(requests_per_poll: float, daily_quota: int, share: float, floor_s: float) -> float:
    """The period between polls of one account that keeps them within SHARE of DAILY_QUOTA a day
    at REQUESTS_PER_POLL each, never shorter than FLOOR_S. A quota of 0 is no quota (the
    limiter's meaning): the floor."""
    if not 0 < share <= 1:
        raise ValueError(f"the reconciliation share must be in (0, 1], got {share}")
    if daily_quota <= 0:
        return floor_s
    requests = max(float(requests_per_poll), QUIET_POLL_REQUESTS)
    allowed = max(share * daily_quota - FIXED_REQUESTS_PER_DAY, requests)
    return max(floor_s, DAY_S * requests / allowed)


def effective_period_s(period_s: float, tick_s: float) -> float:
    """When the next poll really comes: at the first beat tick once the turn key expired."""
    if tick_s <= 0:
        return period_s
    return math.ceil(period_s / tick_s - 1e-9) * tick_s


def repair_bound_s(period_s: float, tick_s: float, rate_per_s: float,
                   requests_per_poll: float = QUIET_POLL_REQUESTS) -> float:
    """How late a change whose webhook was lost is synced, at most, while the account's live
    traffic leaves it slots and the poll does not fail (nor waits in a Celery backlog): the
    change lands just after a poll began reading; the next poll comes PERIOD_S later, deferred by
    a busy account for up to MAX_DEFER_PERIODS more, at the first beat tick after that; then the
    poll's requests and the queued run's, at the account's rate (0: unlimited)."""
    waited = effective_period_s(period_s * (1 + MAX_DEFER_PERIODS), tick_s)
    requests_s = (requests_per_poll + RUN_REQUESTS) / rate_per_s if rate_per_s > 0 else 0.0
    return waited + requests_s


def quiet_requests_per_day(config: LinksConfig, daily_quota: int, share: float, floor_s: float,
                           tick_s: float) -> dict[str, float]:
    """Requests a day the polls cost, per Planfix account, while nothing changes: each poll
    account's quiet polls at its effective period plus its fixed daily lookups."""
    per_account: dict[str, float] = {}
    for group in poll_accounts(config):
        period = effective_period_s(poll_period_s(QUIET_POLL_REQUESTS, daily_quota, share, floor_s), tick_s)
        cost = DAY_S / period * QUIET_POLL_REQUESTS + FIXED_REQUESTS_PER_DAY
        per_account[group.account] = per_account.get(group.account, 0.0) + cost
    return per_account


# ----------------------------------------------------------------------------------------------
# The comment audit's allowance

def audit_allowance(credit: float, daily_quota: int, share: float, period_s: float) -> tuple[int, float]:
    """How many tasks the audit after a poll lists, and the credit left: CREDIT (tasks' worth
    the audit has not spent) plus SHARE of DAILY_QUOTA over the poll's PERIOD_S, in whole tasks
    (a task is one request), at most AUDIT_MAX_TASKS; the credit kept is capped at that, so a
    long pause does not bank a burst. No quota: the most, with nothing kept."""
    if not 0 <= share <= 1:
        raise ValueError(f"the comment audit share must be in [0, 1], got {share}")
    if share == 0:
        return 0, 0.0
    if daily_quota <= 0:
        return AUDIT_MAX_TASKS, 0.0
    credit = max(0.0, credit) + share * daily_quota * max(0.0, period_s) / DAY_S
    tasks = min(AUDIT_MAX_TASKS, int(credit))
    return tasks, min(float(AUDIT_MAX_TASKS), credit - tasks)


def take_audit_allowance(store: redis.Redis, group: PollAccount, daily_quota: int, share: float,
                         period_s: float) -> int:
    """GROUP's audit allowance after a poll of PERIOD_S (audit_allowance), its credit kept in Redis."""
    credit_key = key(AUDIT_CREDIT_KEY, group.key)
    raw = store.get(credit_key)
    tasks, credit = audit_allowance(float(raw) if raw is not None else 0.0, daily_quota, share, period_s)
    store.set(credit_key, repr(credit), ex=LAST_POLL_TTL_S)
    return tasks


# ----------------------------------------------------------------------------------------------
# An account's budget as its tick and `crosslink status` read it

@dataclass(frozen=True)
class Budget:
    """An account's reconciliation as its next tick sees it."""

    account: str
    period_s: float
    requests_per_poll: int
    repair_bound_s: float
    budget_per_day: float | None
    last_poll_s_ago: float | None


def account_budget(store: redis.Redis, group: PollAccount, *, daily_quota: int, rate_per_s: float,
                   share: float, floor_s: float, tick_s: float, now: float | None = None) -> Budget:
    """GROUP's period, the requests its last poll made and the repair bound they give (for the
    tick, and for `crosslink status`). DAILY_QUOTA and RATE_PER_S: the account's limits."""
    last = read_last_poll(store, group.key)
    requests = last.requests if last is not None else QUIET_POLL_REQUESTS
    period = poll_period_s(requests, daily_quota, share, floor_s)
    bound = repair_bound_s(period, tick_s, rate_per_s, requests)
    now = time.time() if now is None else now
    return Budget(group.key, round(period, 3), requests, round(bound, 1),
                  share * daily_quota if daily_quota > 0 else None,
                  round(now - last.at, 1) if last is not None else None)
