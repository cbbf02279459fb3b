"""What the poller keeps in Redis for each poll account: every key it uses, and the reads and the
one write of the records a poll leaves for the next (cursor, seen records, the last poll).

Every key is named by the poll account (PollAccount.key), so the link sides polled together share
one cursor, one seen record and one turn. The keys are spelled here once, as the queue protocol's
are in crosslink.queue.names, so a reader of the poll, the turn or the audit finds them in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis

from producers.reconcile.verdicts import Seen, parse_seen, seen_record

# Keys, by poll account (PollAccount.key).
CURSOR_KEY = "crosslink:reconcile:cursor:{account}"
SEEN_KEY = "crosslink:reconcile:seen:{account}"
TIMEZONE_KEY = "crosslink:reconcile:tz:{account}"
TURN_KEY = "crosslink:reconcile:turn:{account}"
# The last poll: when it started, the requests it made, the account's requests today after it.
LAST_POLL_KEY = "crosslink:reconcile:last:{account}"
# The poll record outlives any sensible period; a dropped account's record goes by itself.
LAST_POLL_TTL_S = 7 * 86400
# The comment audit: the last task it looked at, per account (the rotation goes on after it),
# and the tasks' worth of its share the polls so far have not spent (audit_allowance).
AUDIT_POSITION_KEY = "crosslink:reconcile:audit:{account}"
AUDIT_CREDIT_KEY = "crosslink:reconcile:audit-credit:{account}"

# Advance the cursor only forward: two polls finishing out of order must not move it back past
# what the later one queued (moving back would be harmless, but forward-only keeps it monotonic).
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def key(template: str, account: str) -> str:
    return template.format(account=account)


@dataclass(frozen=True)
class LastPoll:
    at: float
    requests: int
    used_after: int | None


def load_seen(store: redis.Redis, account: str) -> dict[int, Seen]:
    seen = {}
    for number, raw in store.hgetall(key(SEEN_KEY, account)).items():
        record = parse_seen(raw)
        if record is not None and number.isdigit():
            seen[int(number)] = record
    return seen


def read_cursor(store: redis.Redis, account: str) -> float | None:
    raw = store.get(key(CURSOR_KEY, account))
    return float(raw) if raw is not None else None


def read_last_poll(store: redis.Redis, account: str) -> LastPoll | None:
    stored = store.hgetall(key(LAST_POLL_KEY, account))
    raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in stored.items()}
    try:
        used = raw.get("used_after")
        return LastPoll(float(raw["at"]), int(raw["requests"]), int(used) if used not in (None, b"", "") else None)
    except (KeyError, ValueError, TypeError):
        return None


def save_poll(store: redis.Redis, account: str, keep: Mapping[int, Seen], now: float, requests: int,
              used_after: int | None) -> None:
    """What a complete poll of ACCOUNT at NOW leaves for the next, in one transaction: the seen
    record KEEP (replacing the last poll's), the cursor moved forward to NOW, and the last poll
    (its REQUESTS, and USED_AFTER: the account's requests today once it was done)."""
    seen_key, last_key = key(SEEN_KEY, account), key(LAST_POLL_KEY, account)
    with store.pipeline(transaction=True) as pipe:
        pipe.delete(seen_key)
        if keep:
            pipe.hset(seen_key, mapping={str(n): seen_record(s) for n, s in keep.items()})
        pipe.eval(_ADVANCE, 1, key(CURSOR_KEY, account), repr(now))
        pipe.delete(last_key)
        pipe.hset(last_key, mapping={"at": repr(now), "requests": requests,
                                     "used_after": "" if used_after is None else used_after})
        pipe.expire(last_key, LAST_POLL_TTL_S)
        pipe.execute()
