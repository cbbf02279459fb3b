"""The reconciliation poller: ask Planfix what changed since we last looked, and queue a sync for
each task, so a change whose webhook never came (a scenario switched off, Planfix's retries given
up, our receiver down) is still synced within one reconciliation period.

Planfix has no change feed but its task filters (API-NOTES.md section 3): filter 79 "last modified
or commented" with a date range, and `POST /comment/list` with filter 3000 (comment date). Every
poll of a link side lists the tasks in a window that starts a little before the cursor (the time
the last complete poll started) and queues one coalesced job per task through
``Enqueuer.sync``, the same door the webhook receiver uses, so a task already waiting is not
queued twice. The worker then reads the real state and writes nothing when the sides agree.

Why the window overlaps the cursor: Planfix's date filters name whole minutes, in the time zone
of the token's employee, and its clock is not ours. The cursor only moves once every page of the
window has been queued, so a poll that fails half-way (rate limit, timeout) leaves it where it
was and the next poll reads the same changes again.

Why a "seen" record: with the overlap every change would be queued by two or three polls in a
row. A task whose change stamp equals the one a previous poll saw, when that previous poll came
safely after the stamp (STAMP_SETTLE_S), cannot have changed again, so it is not queued again.
A stamp without seconds (or unparseable) never counts as seen: the task is queued, which costs a
no-op sync but never loses a change.

Every request goes through the client's account limiter, so the poll shares Planfix's 1 request/s
with live traffic. A quiet poll costs two requests per link side (the task and the comment feed)
plus one time zone lookup a day: at the default 60 s period that is about 2,900 requests a day per
side, which the daily quota (20,000 on the smallest plan) must allow for.

What the feeds cannot see: an edited or deleted comment changes neither filter 79's dates nor a
comment date (the emulator agrees), so those wait for their webhook or for `crosslink reconcile`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis

from planfix.client import PlanfixClient
from producers.enqueue import Enqueuer
from schemas.links import Link, Side

log = logging.getLogger("crosslink.reconcile")

# Planfix filter types (API-NOTES.md section 3).
FILTER_PROJECT = 5
FILTER_TEMPLATE = 51
FILTER_CHANGED_OR_COMMENTED = 79
COMMENT_FILTER_DATE = 3000
USER_FILTER_NUMBER = 9008

# Re-read this much before the cursor: dateFrom is truncated to its minute (up to 60 s early is
# harmless, late would lose changes), plus up to two minutes of clock skew between us and Planfix.
OVERLAP_S = 180.0
# With no cursor yet (a new deployment, a lost Redis) the first poll looks back this far; older
# drift is what `crosslink reconcile --repair` is for.
FIRST_LOOKBACK_S = 3600.0
# Planfix wants a dateTo; a day ahead keeps a Planfix clock that runs ahead of ours inside the window.
WINDOW_AHEAD_S = 86400.0
# A change stamp counts as final for a poll only if the poll came this long after the stamp's
# second: a later change within the same second, or on a Planfix clock ahead of ours, is then
# impossible to hide behind an equal stamp.
STAMP_SETTLE_S = 60.0
# The token employee's time zone rarely changes; looking it up once a day per side is cheap.
TIMEZONE_CACHE_S = 86400.0
# When the time zone Planfix names is unknown here, widen the window by the largest UTC offset
# there is (UTC-12 .. UTC+14), so no change can fall outside it; it costs bigger pages, not data.
MAX_UTC_OFFSET_S = 14 * 3600.0
# Only these fields are needed to decide what to queue; every other byte would waste the quota.
POLL_TASK_FIELDS = "id,dateOfLastUpdate,dateOfLastComment"
POLL_COMMENT_FIELDS = "id,task,project"

CURSOR_KEY = "crosslink:reconcile:cursor:{link}:{side}"
SEEN_KEY = "crosslink:reconcile:seen:{link}:{side}"
TIMEZONE_KEY = "crosslink:reconcile:tz:{link}:{side}"
TURN_KEY = "crosslink:reconcile:turn:{link}:{side}"
# Each beat replica sends the same periodic tick. The first poll of a period takes the turn key
# for this share of the period and every other poll of that period finds it taken. Below 1 so a
# single beat's next tick (a period later, give or take its own jitter) is never refused; above
# 1/2 so two beats out of phase still cannot both poll in one period.
TURN_SHARE = 0.9

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


def key(template: str, link: str, side: str) -> str:
    return template.format(link=link, side=side)


# ==============================================================================================
# Decisions (pure)

@dataclass(frozen=True)
class Stamp:
    """When a task last changed, as Planfix reported it.

    ``text`` is compared for equality; ``epoch`` is set only when both dates carried seconds in
    UTC (dateTimeUtcSeconds), which is what lets a stamp count as final.
    """

    text: str
    epoch: float | None


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


def _point_epoch(point: Any) -> tuple[str, float | None]:
    if not isinstance(point, Mapping):
        return "", None
    exact = point.get("dateTimeUtcSeconds")
    if exact:
        try:
            return str(exact), datetime.strptime(str(exact), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            return str(exact), None
    return f"{point.get('date') or ''} {point.get('time') or ''}".strip(), None


def task_stamp(task: Mapping[str, Any]) -> Stamp:
    """The change stamp of a task from dateOfLastUpdate and dateOfLastComment.

    A task never commented has no dateOfLastComment; that counts as exact. A date without
    seconds makes the whole stamp inexact.
    """
    update_text, update_epoch = _point_epoch(task.get("dateOfLastUpdate"))
    comment_point = task.get("dateOfLastComment")
    comment_text, comment_epoch = _point_epoch(comment_point)
    text = f"{update_text}|{comment_text}"
    if update_epoch is None or (comment_point and comment_epoch is None):
        return Stamp(text, None)
    return Stamp(text, max(update_epoch, comment_epoch or update_epoch))


@dataclass(frozen=True)
class Seen:
    """A poll at POLLED_AT found the task with STAMP."""

    stamp: str
    polled_at: float


def select(found: Mapping[int, Stamp | None], seen: Mapping[int, Seen],
           now: float) -> tuple[list[int], dict[int, Seen]]:
    """Which FOUND tasks to queue at NOW, and the seen record to keep.

    A task is skipped only when an earlier poll saw the same exact stamp and came at least
    STAMP_SETTLE_S after it: then nothing changed since that poll, which queued it. Tasks found
    with no stamp (the comment feed) are always queued. The kept record holds only tasks found
    now, so it never outgrows one window; a skipped task keeps its older entry (still true).
    """
    queue: list[int] = []
    keep: dict[int, Seen] = {}
    for number in sorted(found):
        stamp = found[number]
        before = seen.get(number)
        if (stamp is not None and stamp.epoch is not None and before is not None
                and before.stamp == stamp.text and before.polled_at >= stamp.epoch + STAMP_SETTLE_S):
            keep[number] = before
            continue
        queue.append(number)
        if stamp is not None:
            keep[number] = Seen(stamp.text, now)
    return queue, keep


def poll_filter_sets(side: Side) -> list[list[dict[str, Any]]]:
    """Task-list filter sets that together cover SIDE's scope and the mirrors we create there.

    Project/template scopes are filtered by Planfix; mirrors live in `create`'s project or
    template, which may lie outside the scope, and a person's change to a mirror must be polled
    too. Other scope kinds cannot be filtered on the server: then every changed task is listed
    and the worker decides (an out-of-scope task costs one read, never a write).
    """
    by_kind = {"project": FILTER_PROJECT, "template": FILTER_TEMPLATE}
    if side.scope.kind not in by_kind:
        return [[]]
    sets = [[{"type": by_kind[side.scope.kind], "operator": "equal", "value": side.scope.value}]]
    for kind, value in (("project", side.create.project), ("template", side.create.template)):
        if value is not None and (kind, value) != (side.scope.kind, side.scope.value):
            sets.append([{"type": by_kind[kind], "operator": "equal", "value": value}])
            break  # a mirror has both; one extra set covers it
    return sets


def comment_task_wanted(side: Side, comment: Mapping[str, Any]) -> bool:
    """Whether a comment from the account-wide comment feed may concern SIDE.

    The comment feed cannot be filtered by scope; for a project scope the comment says its
    project, so other projects' comments are dropped here. Otherwise the worker decides.
    """
    if side.scope.kind != "project":
        return True
    project = (comment.get("project") or {}).get("id") if isinstance(comment.get("project"), Mapping) else None
    wanted = {side.scope.value} | ({side.create.project} if side.create.project is not None else set())
    return project is None or int(project) in wanted


# ==============================================================================================
# The poll (I/O)

@dataclass
class PollReport:
    link: str
    side: str
    window_from: float
    found: int = 0
    queued: int = 0
    coalesced: int = 0
    skipped: int = 0
    cursor: float | None = None
    tasks: list[int] = field(default_factory=list)


def token_zone(link: Link, side: str, client: PlanfixClient, store: redis.Redis) -> ZoneInfo | None:
    """The time zone Planfix reads our date filters in: the token employee's (integration_user).

    Cached in Redis. No timezone in the answer means UTC (the emulator); a zone unknown here
    gives None, which makes the window wider instead of wrong.
    """
    cache_key = key(TIMEZONE_KEY, link.name, side)
    name = store.get(cache_key)
    if name is None:
        user = link.sides[side].integration_user
        users = client.list_users(filters=[{"type": USER_FILTER_NUMBER, "operator": "equal", "value": user}],
                                  only_active=False, fields="id,timezone")
        name = (users[0].get("timezone") if users else None) or "UTC"
        store.set(cache_key, name, ex=int(TIMEZONE_CACHE_S))
    name = name.decode() if isinstance(name, bytes) else str(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r for the token user; polling a wider window", name,
                    extra={"link": link.name, "side": side})
        return None


def load_seen(store: redis.Redis, link: str, side: str) -> dict[int, Seen]:
    seen = {}
    for number, raw in store.hgetall(key(SEEN_KEY, link, side)).items():
        try:
            stamp, polled_at = json.loads(raw)
            seen[int(number)] = Seen(str(stamp), float(polled_at))
        except (ValueError, TypeError):
            continue  # a damaged entry only means one more no-op sync
    return seen


def read_cursor(store: redis.Redis, link: str, side: str) -> float | None:
    raw = store.get(key(CURSOR_KEY, link, side))
    return float(raw) if raw is not None else None


def poll_side(link: Link, side: str, client: PlanfixClient, enqueuer: Enqueuer, store: redis.Redis,
              clock: Callable[[], float] = time.time, comments: bool = True) -> PollReport:
    """Queue a sync of every task of LINK's SIDE changed or commented since the cursor.

    CLIENT must be paced by the account limiter. Any Planfix error propagates before anything is
    queued or the cursor moves; queueing is idempotent (coalesced), so a poll that fails after
    queueing part of the window and is repeated costs nothing extra.
    """
    now = clock()
    conf = link.sides[side]
    start = window_start(read_cursor(store, link.name, side), now)
    report = PollReport(link.name, side, start)
    span = date_range(start, now, token_zone(link, side, client, store))
    found: dict[int, Stamp | None] = {}
    for filters in poll_filter_sets(conf):
        for task in client.list_tasks(
                filters=[*filters, {"type": FILTER_CHANGED_OR_COMMENTED, "operator": "equal", "value": span}],
                fields=POLL_TASK_FIELDS):
            found[int(task["id"])] = task_stamp(task)
    if comments:
        for comment in client.list_comments(
                filters=[{"type": COMMENT_FILTER_DATE, "operator": "equal", "value": span}],
                fields=POLL_COMMENT_FIELDS):
            number = (comment.get("task") or {}).get("id")
            if number is not None and int(number) not in found and comment_task_wanted(conf, comment):
                found[int(number)] = None
    queue, keep = select(found, load_seen(store, link.name, side), now)
    for number in queue:
        if enqueuer.sync(link.name, side, number):
            report.queued += 1
        else:
            report.coalesced += 1
    report.found, report.skipped, report.tasks = len(found), len(found) - len(queue), queue
    seen_key = key(SEEN_KEY, link.name, side)
    with store.pipeline(transaction=True) as pipe:
        pipe.delete(seen_key)
        if keep:
            pipe.hset(seen_key, mapping={str(n): json.dumps([s.stamp, s.polled_at]) for n, s in keep.items()})
        pipe.eval(_ADVANCE, 1, key(CURSOR_KEY, link.name, side), repr(now))
        pipe.execute()
    report.cursor = now
    log.info("reconcile poll: %d changed, %d queued, %d already waiting, %d seen before",
             report.found, report.queued, report.coalesced, report.skipped,
             extra={"link": link.name, "side": side})
    return report


def take_turn(store: redis.Redis, link: str, side: str, period_s: float, token: str) -> bool:
    """Whether this poll is the one of its period for LINK's SIDE (see TURN_SHARE).

    The key is never deleted: it expires, so a crashed poll cannot block the next period.
    """
    ttl_ms = max(1, int(period_s * TURN_SHARE * 1000))
    return bool(store.set(key(TURN_KEY, link, side), token, nx=True, px=ttl_ms))
