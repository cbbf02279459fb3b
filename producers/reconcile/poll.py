"""One poll of one account: read what changed in the window, decide per link side, queue the runs,
and leave the records the next poll starts from.

The only part of the poller that both reads Planfix and queues runs. Every read is made before
anything is queued, and the cursor moves (producers.reconcile.records.save_poll) only once every
page of the window has been queued.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.names import comment_prints_key, registry_key, synced_stamps
from planfix.client import PlanfixClient
from producers.reconcile.accounts import Member, PollAccount, task_routes
from producers.reconcile.budget import feed_requests
from producers.reconcile.records import load_seen, read_cursor, save_poll
from producers.reconcile.stamps import Stamp, point_epoch, task_stamp
from producers.reconcile.verdicts import (
    COMMENT,
    ECHO,
    POLL_TASK_HINTS,
    TASK,
    FeedComment,
    Seen,
    Verdict,
    classify,
    hints_for,
    named_comments,
    next_seen,
)
from producers.reconcile.window import date_range, token_zone, window_start

log = logging.getLogger("crosslink.reconcile")

# Planfix filter types (API-NOTES.md section 3).
FILTER_CHANGED_OR_COMMENTED = 79
COMMENT_FILTER_DATE = 3000

# Only these fields are needed to route and classify a change; every other byte wastes the quota.
POLL_TASK_FIELDS = "id,dateOfLastUpdate,dateOfLastComment,project,template"
POLL_COMMENT_FIELDS = "id,task,owner,dateTime"

# A poll's verdicts: one for each task and each link side the task routes to.
Verdicts = dict[tuple[int, Member], Verdict]


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
    stamps, routes = list_changed(group, client, span, report)
    follow_paired(store, group, routes)
    seen = load_seen(store, group.key)
    verdicts = judge(group, store, stamps, routes, seen)
    comments = read_comment_feed(client, span, verdicts, report)
    add_mirrored(store, verdicts, comments)
    queued_kinds, named = queue_runs(group, enqueuer, stamps, verdicts, comments, report)
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


def list_changed(group: PollAccount, client: PlanfixClient, span: dict[str, str],
                 report: PollReport) -> tuple[dict[int, Stamp], dict[int, list[Member]]]:
    """Every task of GROUP's account changed or commented in SPAN (the task feed, its requests
    counted in REPORT): each one's change stamp, and the link sides its project or template
    routes it to (task_routes)."""
    tasks = list(client.list_tasks(
        filters=[{"type": FILTER_CHANGED_OR_COMMENTED, "operator": "equal", "value": span}],
        fields=POLL_TASK_FIELDS))
    report.requests += feed_requests(len(tasks))
    stamps = {int(task["id"]): task_stamp(task) for task in tasks}
    routes = {int(task["id"]): [m for m in group.members if task_routes(m.conf, task)] for task in tasks}
    return stamps, routes


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


def judge(group: PollAccount, store: redis.Redis, stamps: Mapping[int, Stamp],
          routes: Mapping[int, list[Member]], seen: Mapping[int, Seen]) -> Verdicts:
    """Each routed link side's verdict on each changed task (classify), against the stamps the
    side's runs recorded as synced and what earlier polls SEEN; in task order."""
    synced: dict[tuple[str, str], dict[int, str]] = {}
    for member in group.members:
        routed = [number for number, members in routes.items() if member in members]
        synced[(member.link, member.side)] = synced_stamps(store, member.link, member.side, routed)
    verdicts: Verdicts = {}
    for number in sorted(stamps):
        for member in routes[number]:
            verdicts[(number, member)] = classify(stamps[number], synced[(member.link, member.side)].get(number),
                                                  seen.get(number))
    return verdicts


def _feed_comment(comment: Mapping[str, Any]) -> FeedComment:
    owner = comment.get("owner")
    owner_id = owner.get("id") if isinstance(owner, Mapping) else None
    return FeedComment(int(comment["id"]), str(owner_id) if owner_id else None, point_epoch(comment.get("dateTime")))


def read_comment_feed(client: PlanfixClient, span: dict[str, str], verdicts: Verdicts,
                      report: PollReport) -> dict[int, list[FeedComment]]:
    """The comments the comment feed lists in SPAN, by task: requested only when a verdict is
    COMMENT (one request shared by the whole poll), its requests counted in REPORT."""
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
    return comments


def add_mirrored(store: redis.Redis, verdicts: Verdicts, comments: Mapping[int, list[FeedComment]]) -> None:
    """Count, in each COMMENT verdict with comments in the feed, the comments the side's runs
    already mirrored as named (VERDICTS is updated in place)."""
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


def queue_runs(group: PollAccount, enqueuer: Enqueuer, stamps: Mapping[int, Stamp], verdicts: Verdicts,
               comments: Mapping[int, list[FeedComment]],
               report: PollReport) -> tuple[dict[int, list[str]], dict[int, set[int]]]:
    """Queue each link side's run its verdict calls for (hints_for), counted in REPORT; per task,
    the kinds its sides were queued as (ECHO: a COMMENT verdict with nothing to name) and the
    comments named to them, for the seen record."""
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
    return queued_kinds, named
