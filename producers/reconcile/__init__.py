"""The reconciliation poller: ask Planfix what changed since we last looked, and queue a sync for
each task, so a change whose webhook never came (a scenario switched off, Planfix's retries given
up, our receiver down) is still synced within a bounded time (``repair_bound_s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from planfix.client import PlanfixClient
from producers.enqueue import Enqueuer
from producers.reconcile.accounts import (
    Member, PollAccount, find_poll_account, poll_account_of, poll_accounts, poll_filter_sets, task_routes,
)
from producers.reconcile.audit import AUDIT_COMMENT_FIELDS, audit_comments, audit_round, edited_comments
from producers.reconcile.budget import (
    AUDIT_MAX_TASKS, DAY_S, FIXED_REQUESTS_PER_DAY, RUN_REQUESTS, Budget, account_budget, audit_allowance,
    effective_period_s, feed_requests, poll_period_s, quiet_requests_per_day, repair_bound_s,
    take_audit_allowance,
)
from producers.reconcile.records import (
    AUDIT_CREDIT_KEY, CURSOR_KEY, LAST_POLL_KEY, LAST_POLL_TTL_S, SEEN_KEY, TIMEZONE_KEY, TURN_KEY, LastPoll,
    key, load_seen, read_cursor, read_last_poll, save_poll,
)
from producers.reconcile.stamps import STAMP_SETTLE_S, Stamp, point_epoch, task_stamp
from producers.reconcile.turns import MAX_DEFER_PERIODS, POLL_LANE, defer_poll, live_requests, take_turn
from producers.reconcile.verdicts import (
    CHECKLIST, COMMENT, ECHO, FULL, POLL_TASK_HINTS, REQUEUE_LIMIT, SKIP, TASK, FeedComment, Seen, Verdict,
    classify, comment_hints, hints_for, named_comments, next_seen, parse_seen, seen_record, settled,
)
from producers.reconcile.window import FIRST_LOOKBACK_S, OVERLAP_S, date_range, planfix_minute, token_zone, window_start
from workers.names import comment_prints_key, registry_key, synced_stamps

# Every name code outside the package reads from producers.reconcile (crosslink, producers.tasks,
# the tests): re-exported, so no importer depends on which module a name lives in.
__all__ = [
    "AUDIT_COMMENT_FIELDS", "AUDIT_CREDIT_KEY", "AUDIT_MAX_TASKS", "Budget", "CHECKLIST", "COMMENT",
    "CURSOR_KEY", "DAY_S", "ECHO", "FIRST_LOOKBACK_S", "FIXED_REQUESTS_PER_DAY", "FULL", "FeedComment",
    "LAST_POLL_KEY", "LAST_POLL_TTL_S", "LastPoll", "MAX_DEFER_PERIODS", "OVERLAP_S", "POLL_LANE",
    "POLL_TASK_HINTS", "PollAccount", "REQUEUE_LIMIT", "RUN_REQUESTS", "SEEN_KEY", "SKIP", "STAMP_SETTLE_S",
    "Seen", "Stamp", "TASK", "TIMEZONE_KEY", "TURN_KEY", "Verdict", "account_budget", "audit_allowance",
    "audit_comments", "audit_round", "classify", "comment_hints", "defer_poll", "edited_comments",
    "effective_period_s", "find_poll_account", "hints_for", "key", "live_requests", "load_seen",
    "named_comments", "next_seen", "parse_seen", "planfix_minute", "poll_account", "poll_account_of",
    "poll_accounts", "poll_filter_sets", "poll_period_s", "quiet_requests_per_day", "read_cursor",
    "read_last_poll", "repair_bound_s", "seen_record", "settled", "take_audit_allowance", "take_turn",
    "task_routes", "task_stamp", "window_start",
]

log = logging.getLogger("crosslink.reconcile")

# Planfix filter types (API-NOTES.md section 3).
FILTER_CHANGED_OR_COMMENTED = 79
COMMENT_FILTER_DATE = 3000

# Only these fields are needed to route and classify a change; every other byte wastes the quota.
POLL_TASK_FIELDS = "id,dateOfLastUpdate,dateOfLastComment,project,template"
POLL_COMMENT_FIELDS = "id,task,owner,dateTime"


# ==============================================================================================
# The poll (I/O)

@dataclass
class PollReport:
    account: str
    window_from: float
    found: int = 0
    queued: int = 0
    coalesced: int = 0
    skipped: int = 0
    requests: int = 0
    comment_feed: bool = False
    cursor: float | None = None
    # (link, side, task, hints) of every run queued, in order.
    runs: list[tuple[str, str, int, tuple[str, ...]]] = field(default_factory=list)

    @property
    def tasks(self) -> list[int]:
        return sorted({task for _, _, task, _ in self.runs})


def _feed_comment(comment: Mapping[str, Any]) -> FeedComment:
    owner = comment.get("owner")
    owner_id = owner.get("id") if isinstance(owner, Mapping) else None
    return FeedComment(int(comment["id"]), str(owner_id) if owner_id else None, point_epoch(comment.get("dateTime")))


def follow_paired(store: redis.Redis, group: PollAccount, routes: dict[int, list[Member]]) -> None:
    """Route each changed task no scope routes to the link sides that have it paired: one moved
    out of its side's scope sends no webhook (scenarios filter by project), and its run must see
    it gone to tell the other side (workers.sync). One pipelined read per poll."""
    unrouted = [number for number, members in routes.items() if not members]
    if not unrouted:
        return
    with store.pipeline(transaction=False) as pipe:
        for number in unrouted:
            for member in group.members:
                pipe.hexists(registry_key(member.link, "task"), f"{member.side}:{number}")
        paired = iter(pipe.execute())
    for number in unrouted:
        routes[number] = [member for member in group.members if next(paired)]


def poll_account(group: PollAccount, client: PlanfixClient, enqueuer: Enqueuer, store: redis.Redis,
                 clock: Callable[[], float] = time.time,
                 used_today: Callable[[], int | None] | None = None) -> PollReport:
    """Queue a sync of every task of GROUP's link sides changed or commented since the cursor.

    CLIENT (the first member's token) must be paced by the account limiter. Every read is made
    before anything is queued, so any Planfix error propagates with nothing queued and the cursor
    where it was; queueing is idempotent (coalesced), so a repeated poll costs nothing extra.
    USED_TODAY, if given, reads the account's requests today once the poll is done (the next
    tick compares it to tell live traffic: defer_poll).
    """
    now = clock()
    start = window_start(read_cursor(store, group.key), now)
    report = PollReport(group.key, start)
    zone, report.requests = token_zone(group, client, store)
    span = date_range(start, now, zone)
    tasks = list(client.list_tasks(
        filters=[{"type": FILTER_CHANGED_OR_COMMENTED, "operator": "equal", "value": span}],
        fields=POLL_TASK_FIELDS))
    report.requests += feed_requests(len(tasks))
    stamps = {int(task["id"]): task_stamp(task) for task in tasks}
    routes = {int(task["id"]): [m for m in group.members if task_routes(m.conf, task)] for task in tasks}
    follow_paired(store, group, routes)
    seen = load_seen(store, group.key)
    synced: dict[tuple[str, str], dict[int, str]] = {}
    for member in group.members:
        routed = [number for number, members in routes.items() if member in members]
        synced[(member.link, member.side)] = synced_stamps(store, member.link, member.side, routed)
    verdicts: dict[tuple[int, Member], Verdict] = {}
    for number in sorted(stamps):
        for member in routes[number]:
            verdicts[(number, member)] = classify(stamps[number], synced[(member.link, member.side)].get(number),
                                                  seen.get(number))
    comments: dict[int, list[FeedComment]] = {}
    if any(verdict.kind == COMMENT for verdict in verdicts.values()):
        listed = list(client.list_comments(
            filters=[{"type": COMMENT_FILTER_DATE, "operator": "equal", "value": span}],
            fields=POLL_COMMENT_FIELDS))
        report.requests += feed_requests(len(listed))
        report.comment_feed = True
        for comment in listed:
            number = (comment.get("task") or {}).get("id")
            if number is not None:
                comments.setdefault(int(number), []).append(_feed_comment(comment))
    # A comment a run already mirrored (its fingerprint is kept: workers.state) needs no run:
    # the webhook's run read it, and an edit since is the comment audit's to find.
    told = [(number, member) for (number, member), verdict in verdicts.items()
            if verdict.kind == COMMENT and comments.get(number)]
    if told:
        with store.pipeline(transaction=False) as pipe:
            for number, member in told:
                pipe.hkeys(comment_prints_key(member.link, member.side, number))
            mirrored = pipe.execute()
        for (number, member), ids in zip(told, mirrored):
            done = frozenset(int(comment) for comment in ids)
            verdict = verdicts[(number, member)]
            verdicts[(number, member)] = replace(verdict, named=verdict.named | done)
    queued_kinds: dict[int, list[str]] = {number: [] for number in stamps}
    named: dict[int, set[int]] = {number: set() for number in stamps}
    for (number, member), verdict in verdicts.items():
        hints = hints_for(verdict, comments.get(number, ()), group.robot)
        if verdict.kind == COMMENT and not hints:
            queued_kinds[number].append(ECHO)
        if not hints:
            continue
        queued_kinds[number].append(verdict.kind if hints != POLL_TASK_HINTS else TASK)
        named[number] |= named_comments(hints)
        sent = [enqueuer.sync(member.link, member.side, number, hint) for hint in hints]
        if sent[0]:
            report.queued += 1
        else:
            report.coalesced += 1
        report.runs.append((member.link, member.side, number, hints))
    report.found = len(stamps)
    report.skipped = sum(1 for kinds in queued_kinds.values() if not set(kinds) - {ECHO})
    keep = {number: next_seen(stamps[number], seen.get(number), queued_kinds[number], now, named[number])
            for number in stamps}
    used_after = used_today() if used_today is not None else None
    save_poll(store, group.key, keep, now, report.requests, used_after)
    report.cursor = now
    log.info("reconcile poll: %d changed, %d runs queued, %d already waiting, %d not queued, %d requests",
             report.found, report.queued, report.coalesced, report.skipped, report.requests,
             extra={"account": group.key})
    return report
