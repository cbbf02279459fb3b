"""Which beat tick polls an account, and when a tick leaves the account to live traffic.

The beat ticks more often than an account's period (producers.reconcile.budget); a
per-account turn key whose TTL is that period decides which tick polls. A tick also yields to
live traffic: while the account's runs have used BUSY_SHARE of its rate since the last poll, the
poll waits, for at most MAX_DEFER_PERIODS more periods (``defer_poll``). Every request still goes
through the client's account limiter, in a lane of its own (POLL_LANE).
"""

from __future__ import annotations

import redis

from producers.reconcile.records import TURN_KEY, key

# Live traffic at this share of the account's rate since the last poll makes the account busy.
BUSY_SHARE = 0.5
# A busy account's poll waits at most this many periods beyond its own: the repair bound holds.
MAX_DEFER_PERIODS = 1.0
# Each account's polls take their turns at the limiter in this lane (planfix.limiter: lanes are
# served round-robin, so the poll neither starves a link nor is starved by one).
POLL_LANE = "reconcile"


def take_turn(store: redis.Redis, account: str, period_s: float, token: str) -> bool:
    """Whether this tick polls ACCOUNT: the first to ask once the last poll's period has run out.

    The key is never deleted: it expires, so a crashed poll cannot block the next period.
    """
    ttl_ms = max(1, int(period_s * 1000))
    return bool(store.set(key(TURN_KEY, account), token, nx=True, px=ttl_ms))


def defer_poll(*, live_requests: int, since_poll_s: float, rate_per_s: float, period_s: float) -> bool:
    """Whether this tick leaves the account's turn to live traffic: LIVE_REQUESTS were made in
    the SINCE_POLL_S since the last poll ended, at BUSY_SHARE of the account's rate or more, and
    the poll is not yet MAX_DEFER_PERIODS late. An unlimited rate is never busy."""
    if since_poll_s >= period_s * (1 + MAX_DEFER_PERIODS) or since_poll_s <= 0 or rate_per_s <= 0:
        return False
    return live_requests / since_poll_s >= BUSY_SHARE * rate_per_s


def live_requests(used_today: int, used_after_poll: int | None) -> int:
    """The account's requests since the last poll ended (the daily counter restarts at UTC
    midnight: then today's count is all we know)."""
    if used_after_poll is None or used_today < used_after_poll:
        return used_today
    return used_today - used_after_poll
