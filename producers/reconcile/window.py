"""The window a poll reads, and how it is written for Planfix's date filters.

The window starts a little before the cursor (the time the last complete poll started). Why
the overlap: Planfix's date filters name whole minutes, in the time zone of the token's employee,
and its clock is not ours. The cursor only moves once every page of the window has been queued,
so a poll that fails half-way (rate limit, timeout) leaves it where it was and the next poll
reads the same changes again.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from planfix.client import PlanfixClient
from producers.reconcile.accounts import PollAccount
from producers.reconcile.records import TIMEZONE_KEY, key

log = logging.getLogger("crosslink.reconcile")

# Planfix filter types (API-NOTES.md section 3).
USER_FILTER_NUMBER = 9008

# Re-read this much before the cursor: dateFrom is truncated to its minute (up to 60 s early is
# harmless, late would lose changes), plus up to two minutes of clock skew between us and Planfix.
OVERLAP_S = 180.0
# With no cursor yet (a new deployment, a lost Redis) the first poll looks back this far; older
# drift is what `crosslink reconcile --repair` is for.
FIRST_LOOKBACK_S = 3600.0
# Planfix wants a dateTo; a day ahead keeps a Planfix clock that runs ahead of ours inside the window.
WINDOW_AHEAD_S = 86400.0
# The token employee's time zone rarely changes; looking it up once a day per account is cheap.
TIMEZONE_CACHE_S = 86400.0
# When the time zone Planfix names is unknown here, widen the window by the largest UTC offset
# there is (UTC-12 .. UTC+14), so no change can fall outside it; it costs bigger pages, not data.
MAX_UTC_OFFSET_S = 14 * 3600.0


def window_start(cursor: float | None, now: float) -> float:
    """Where a poll at NOW starts reading: OVERLAP_S before the cursor, or FIRST_LOOKBACK_S back.

    Assumes the cursor is the start time of the last poll that queued everything it found; a
    cursor in the future (a clock moved back) is treated as now, so the window is never empty.
    """
    if cursor is None:
        return now - FIRST_LOOKBACK_S
    return min(cursor, now) - OVERLAP_S


def planfix_minute(epoch: float, zone: ZoneInfo | None) -> str:
    """EPOCH as Planfix's "dd-MM-yyyy HH:mm" in ZONE, truncated to its minute (never later).

    ZONE None means Planfix named a zone we do not know: the time is written in UTC moved back
    by the largest offset, so the minute named is at or before EPOCH in any zone.
    """
    # Whole seconds first: fromtimestamp rounds microseconds, which could name the next minute.
    whole = math.floor(epoch)
    if zone is None:
        moment = datetime.fromtimestamp(whole - MAX_UTC_OFFSET_S, tz=timezone.utc)
    else:
        moment = datetime.fromtimestamp(whole, tz=zone)
    return moment.strftime("%d-%m-%Y %H:%M")


def date_range(start: float, now: float, zone: ZoneInfo | None) -> dict[str, str]:
    """The filter value for "from START on", in the form Planfix and the emulator take."""
    end_zone = zone if zone is not None else ZoneInfo("UTC")
    end = now + WINDOW_AHEAD_S + (MAX_UTC_OFFSET_S if zone is None else 0)
    return {"dateType": "otherRange_withTime", "dateFrom": planfix_minute(start, zone),
            "dateTo": planfix_minute(end, end_zone)}


def token_zone(group: PollAccount, client: PlanfixClient, store: redis.Redis) -> tuple[ZoneInfo | None, int]:
    """The time zone Planfix reads our date filters in: the token employee's (the robot), and
    the requests it took (0 or 1).

    Cached in Redis. No timezone in the answer means UTC (the emulator); a zone unknown here
    gives None, which makes the window wider instead of wrong.
    """
    cache_key = key(TIMEZONE_KEY, group.key)
    name = store.get(cache_key)
    spent = 0
    if name is None:
        users = client.list_users(filters=[{"type": USER_FILTER_NUMBER, "operator": "equal", "value": group.robot}],
                                  only_active=False, fields="id,timezone")
        spent = 1
        name = (users[0].get("timezone") if users else None) or "UTC"
        store.set(cache_key, name, ex=int(TIMEZONE_CACHE_S))
    name = name.decode() if isinstance(name, bytes) else str(name)
    try:
        return ZoneInfo(name), spent
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r for the token user; polling a wider window", name,
                    extra={"account": group.key})
        return None, spent

