"""Bringing tasks that already exist into a link, without ever creating one twice.

Webhooks only report changes, so tasks that were in a project before the link existed would never
be mirrored. Worse, people often copied some of them by hand into the other account before the
link was set up: queueing a sync of every task would then give those a second, machine-made copy.
So a backfill is match-then-link:

1. list both sides' scopes over REST (paced by the account limiter, full sync fields, so no task
   needs a read of its own);
2. match the tasks neither side has linked yet by name (:func:`match_tasks`); a pair is written
   into the registry with seeded snapshots (:func:`seed_snapshots`) so the first sync resolves the
   differences by the link's owner rules instead of letting whichever side runs first win, and
   one of the two gets the mirror marker (:func:`marker_side`) so `crosslink relink` and the
   checker see the pair too. Live traffic goes on meanwhile: a pair is written under both tasks'
   sync locks and only if neither got a counterpart since the listing (a webhook's sync may have
   mirrored one), so a backfill never gives a task a second counterpart;
3. queue a sync of both sides of every pair (their comments still have to be mirrored) and of
   every task left unmatched (which creates its mirror).

Once queued, `crosslink backfill` follows the mirroring to its end, unless told not to wait:
how many of the tasks it queued the workers have synced, and how each ended
(crosslink/operations/backfill_watch.py).

Progress is kept in Redis per link (:class:`BackfillProgress`), so a backfill stopped half way
continues where it stopped: pairs are never made twice (the registry excludes them from the next
matching) and a task already queued is not queued again. The record is dropped once a run
finishes, so a later backfill starts afresh (and still skips whatever is linked by then).

It lives with the operator commands rather than among the producers: besides queueing jobs it
writes pairs and seeded snapshots into the workers' registry (workers.state) and reads tasks
through the workers' canonical views, which producers may not import.

This module is the run: list, plan, pair, queue, record progress. What it decides without I/O
(matching, seeding, the estimate) is crosslink/operations/backfill_plan.py; how a pair is
written and the progress kept, crosslink/operations/pairing.py, which a person's decisions
(crosslink/operations/decisions.py) share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from crosslink.base.settings import get_settings
from crosslink.operations.backfill_plan import (
    SOURCE_CALLS_PER_SYNC,
    TARGET_CALLS_PER_SYNC,
    UNAGREED,
    Ambiguous,
    BackfillPlan,
    Candidate,
    Estimate,
    PairPlan,
    estimate,
    marker_side,
    match_tasks,
    normalise_name,
    pair_plan,
    pairing_overwrites,
    plan_backfill,
    scope_filters,
    seed_snapshots,
)
from crosslink.operations.backfill_watch import MirrorProgress, follow_mirroring
from crosslink.operations.decisions import DecisionRefused, mirror_by_decision, pair_by_decision
from crosslink.operations.pairing import (
    MARKED,
    PAIRED,
    PROGRESS_KEY,
    QUEUED,
    BackfillBusy,
    BackfillProgress,
    pair_unless_linked,
    pair_view,
    write_marker,
)
from crosslink.operations.session import cli_client, link_in_force
from crosslink.queue.enqueue import Enqueuer
from planfix.client import MAX_PAGE_SIZE, PlanfixClient
from planfix.limiter import AccountLimiter
from schemas.links import Link
from workers.canonical import task_fields
from workers.state import LinkState, parse_marker

# The whole backfill is reached through this module, the names its sibling modules define
# included: the plan's pure decisions (backfill_plan), the pairing's writes and progress record
# (pairing) and a person's decisions (decisions).
__all__ = [
    "MARKED", "PAIRED", "PROGRESS_KEY", "QUEUED", "SOURCE_CALLS_PER_SYNC", "TARGET_CALLS_PER_SYNC", "UNAGREED",
    "Ambiguous", "BackfillBusy", "BackfillPlan", "BackfillProgress", "BackfillReport", "Candidate",
    "DecisionRefused", "Estimate", "PairPlan", "backfill_link", "estimate", "list_scope", "marker_side",
    "match_tasks", "mirror_by_decision", "normalise_name", "pair_by_decision", "pair_plan",
    "pairing_overwrites", "plan_backfill", "raw_name", "run_backfill", "scope_filters", "seed_snapshots",
]


@dataclass
class BackfillReport:
    link: str
    dry_run: bool
    listed: dict[str, int] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)
    already_linked: dict[str, int] = field(default_factory=dict)
    out_of_scope: dict[str, int] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # planned (dry run) or made
    create: list[tuple[str, int]] = field(default_factory=list)  # planned or queued
    ambiguous: list[dict[str, Any]] = field(default_factory=list)
    # Matched pairs left alone because live traffic mirrored one of the two since the listing.
    linked_meanwhile: list[dict[str, Any]] = field(default_factory=list)
    markers_unsafe: int = 0  # pairs kept in the registry only
    resumed: bool = False
    complete: bool = False
    handled: int = 0  # items handled by this run
    total: int = 0  # items in the plan (pairs + tasks to queue)
    estimate: Estimate | None = None
    # Tasks older than the link that sync runs left for a person (LinkState.awaiting), by
    # "side:number"; the ambiguous ones join them once a backfill that writes has run.
    awaiting: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every task this run queued a sync of (both of a pair's), in order; and, where the command
    # waited for the workers, how far their mirroring got (backfill_watch).
    queued: list[tuple[str, int]] = field(default_factory=list)
    mirroring: MirrorProgress | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"link": self.link, "dry_run": self.dry_run, "listed": self.listed, "pages": self.pages,
                "already_linked": self.already_linked, "out_of_scope": self.out_of_scope,
                "pairs": self.pairs, "create": [f"{s}:{n}" for s, n in self.create],
                "ambiguous": self.ambiguous, "linked_meanwhile": self.linked_meanwhile,
                "markers_unsafe": self.markers_unsafe,
                "resumed": self.resumed, "complete": self.complete, "handled": self.handled,
                "total": self.total, "awaiting_decision": self.awaiting,
                "estimate": (None if self.estimate is None else
                             {"requests": self.estimate.requests, "seconds": round(self.estimate.seconds, 1)}),
                "queued": len(self.queued),
                **({} if self.mirroring is None else {"mirroring": self.mirroring.as_dict()})}


def list_scope(link: Link, side: str, client: PlanfixClient) -> tuple[list[dict[str, Any]], int]:
    """Every task of SIDE's scope (or every task, where the scope has no server filter) with the
    sync fields, and the number of pages it took (offset paging ends on a short page)."""
    fields = list(dict.fromkeys([*task_fields(link, side), "name", "sourceObjectId", "sourceDataVersion"]))
    tasks = list(client.list_tasks(filters=scope_filters(link.sides[side]), fields=",".join(fields)))
    return tasks, len(tasks) // MAX_PAGE_SIZE + 1


def run_backfill(link: Link, clients: Mapping[str, PlanfixClient], store: redis.Redis,
                 enqueuer: Enqueuer | None, *, dry_run: bool = False, max_items: int | None = None,
                 rate_per_s: Mapping[str, float] | None = None,
                 on_plan: Callable[[BackfillReport], None] | None = None,
                 on_item: Callable[[BackfillReport], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> BackfillReport:
    """Match-then-link LINK's existing tasks (see the module docstring).

    DRY_RUN lists and plans only: nothing is written to either account or to Crosslink's state
    in Redis (the shared limiter still paces the listing reads, as it must). MAX_ITEMS stops
    after that many items (a pair or a queued task), leaving the progress record for the next
    run. ON_PLAN is called once the plan and estimate are known, ON_ITEM after each item.
    """
    report = BackfillReport(link.name, dry_run)
    progress = BackfillProgress(store, link.name)
    state = LinkState(store, link.name)
    if not dry_run:
        report.resumed = not progress.begin(clock())
    listings = _list_sides(link, clients, report, None if dry_run else progress)
    stages = {} if dry_run else progress.stages()
    plan = plan_backfill(link, listings, state.pairs("task"))
    todo = _todo(plan, stages)
    _describe(link, plan, todo, report, rate_per_s or {})
    report.awaiting = state.awaiting()
    if dry_run:
        report.pairs = [pair_view(pair) for pair in plan.pairs]
        report.create = list(plan.create)
        if on_plan:
            on_plan(report)
        report.complete = True
        return report
    if on_plan:
        on_plan(report)
    assert enqueuer is not None, "a backfill that writes needs an enqueuer"
    run = _Run(link, clients, store, enqueuer, progress, state, report, listings, clock, sleep)
    run.hold_ambiguous(plan.ambiguous)
    # In order: pairs an interrupted run made, then the pairs to make, then the tasks to queue.
    steps = [*(partial(run.finish_leftover, item, stages[item]) for item in sorted(todo.leftovers)),
             *(partial(run.pair, pair, stages.get(pair.item)) for pair in todo.pairs),
             *(partial(run.create, side, number) for side, number in todo.create)]
    for step in steps:
        if max_items is not None and report.handled >= max_items:
            return report
        step()
        report.handled += 1
        if on_item:
            on_item(report)
    report.complete = True
    progress.finish()
    return report


def _list_sides(link: Link, clients: Mapping[str, PlanfixClient], report: BackfillReport,
                progress: BackfillProgress | None) -> dict[str, list[dict[str, Any]]]:
    """Both sides' scopes (list_scope), counted in REPORT and, for a run that writes, in PROGRESS."""
    listings: dict[str, list[dict[str, Any]]] = {}
    for side in link.sides:
        tasks, pages = list_scope(link, side, clients[side])
        listings[side] = tasks
        report.listed[side], report.pages[side] = len(tasks), pages
        if progress is not None:
            progress.set_pages(side, pages)
    return listings


@dataclass(frozen=True)
class _Todo:
    """What a run still has to do, after what the progress record says is done."""

    leftovers: list[str]  # pairs an interrupted run made but did not finish
    pairs: list[PairPlan]
    create: list[tuple[str, int]]


def _todo(plan: BackfillPlan, stages: Mapping[str, str]) -> _Todo:
    # Pairs an interrupted run made are in the registry now, so the new plan does not have them:
    # finish their marker and queueing from the record.
    by_item = {pair.item: pair for pair in plan.pairs}
    leftovers = [item for item, stage in stages.items()
                 if item.startswith("pair:") and stage != QUEUED and item not in by_item]
    return _Todo(leftovers, [pair for pair in plan.pairs if stages.get(pair.item) != QUEUED],
                 [(side, n) for side, n in plan.create if stages.get(f"queue:{side}:{n}") != QUEUED])


def _describe(link: Link, plan: BackfillPlan, todo: _Todo, report: BackfillReport,
              rate_per_s: Mapping[str, float]) -> None:
    """What REPORT says of the PLAN before anything is written: its counts and its estimate."""
    report.already_linked, report.out_of_scope = plan.already_linked, plan.out_of_scope
    first, second = list(link.sides)
    report.ambiguous = [{"name": a.name, first: list(a.left), second: list(a.right)}
                        for a in plan.ambiguous]
    report.total = len(todo.pairs) + len(todo.create) + len(todo.leftovers)
    report.estimate = estimate(link, plan, report.pages, rate_per_s)
    report.markers_unsafe = sum(1 for pair in plan.pairs if pair.marker_on is None)


@dataclass
class _Run:
    """A backfill that writes: what its items' steps share. Each step handles one item."""

    link: Link
    clients: Mapping[str, PlanfixClient]
    store: redis.Redis
    enqueuer: Enqueuer
    progress: BackfillProgress
    state: LinkState
    report: BackfillReport
    listings: Mapping[str, list[dict[str, Any]]]
    clock: Callable[[], float]
    sleep: Callable[[float], None]

    def hold_ambiguous(self, ambiguous: Sequence[Ambiguous]) -> None:
        first, second = list(self.link.sides)
        for found in ambiguous:
            # Neither paired nor mirrored: each waits for a person (crosslink pair / mirror), and
            # no sync run mirrors it meanwhile (workers.plan.older_than_link).
            for side, numbers in ((first, found.left), (second, found.right)):
                for number in numbers:
                    self.state.await_decision(side, number, {"name": raw_name(self.listings[side], number),
                                                             "ambiguous": True, "at": self.clock()})
        self.report.awaiting = self.state.awaiting()

    def finish_leftover(self, item: str, stage: str) -> None:
        self.report.queued += _finish_leftover(self.link, item, stage, self.listings, self.clients, self.progress,
                                               self.enqueuer)

    def pair(self, pair: PairPlan, stage: str | None) -> None:
        if stage is None:
            if not pair_unless_linked(self.link, pair, self.store, self.progress, self.sleep):
                # Live traffic mirrored one of the two since the listing: that pair stands,
                # and the hand-made copy stays unpaired for a person to look at.
                self.progress.set_stage(pair.item, QUEUED)
                self.report.linked_meanwhile.append(pair_view(pair))
                return
            stage = PAIRED
        if stage == PAIRED:
            write_marker(self.link, pair.sides, pair.numbers, pair.marker_on, self.clients)
            self.progress.set_stage(pair.item, MARKED)
        for side, number in zip(pair.sides, pair.numbers):
            self.enqueuer.sync(self.link.name, side, number)
            self.report.queued.append((side, number))
        self.progress.set_stage(pair.item, QUEUED)
        self.report.pairs.append(pair_view(pair))

    def create(self, side: str, number: int) -> None:
        # Matched by no hand copy: backfill decides it gets a mirror.
        self.state.decide_mirror(side, number, by="backfill", at=self.clock())
        self.enqueuer.sync(self.link.name, side, number)
        self.report.queued.append((side, number))
        self.progress.set_stage(f"queue:{side}:{number}", QUEUED)
        self.report.create.append((side, number))


def raw_name(tasks: Sequence[Mapping[str, Any]], number: int) -> str:
    return next((str(task.get("name") or "") for task in tasks if int(task["id"]) == number), "")


def _finish_leftover(link: Link, item: str, stage: str, listings: Mapping[str, list[dict[str, Any]]],
                     clients: Mapping[str, PlanfixClient], progress: BackfillProgress,
                     enqueuer: Enqueuer) -> list[tuple[str, int]]:
    """Finish a pair an interrupted run made (stage paired or marked): the marker, if its task
    is still free of integration data (the interrupted run may have written it already), then
    the queueing. The tasks queued."""
    _, side_a, number_a, side_b, number_b = item.split(":")
    sides, numbers = (side_a, side_b), (int(number_a), int(number_b))
    if stage == PAIRED:
        raw = {}
        for side, number in zip(sides, numbers):
            raw[side] = next((t for t in listings[side] if int(t["id"]) == number), {})
        on = marker_side(link, raw)
        ours = [side for side in sides
                if (parse_marker(raw[side].get("sourceDataVersion")) or ("",))[0] == link.name]
        if not ours and raw[side_a] and raw[side_b]:
            write_marker(link, sides, numbers, on, clients)
        progress.set_stage(item, MARKED)
    for side, number in zip(sides, numbers):
        enqueuer.sync(link.name, side, number)
    progress.set_stage(item, QUEUED)
    return list(zip(sides, numbers))


def backfill_link(link_name: str, links_path: str | None = None, *, dry_run: bool = False,
                  wait: bool = False,
                  on_plan: Callable[[BackfillReport], None] | None = None,
                  on_item: Callable[[BackfillReport], None] | None = None,
                  on_mirror: Callable[[MirrorProgress], None] | None = None) -> BackfillReport:
    """`crosslink backfill`: run_backfill on the link LINK_NAME of LINKS_PATH (else the
    settings'), with the configured Redis, a client per side that sleeps for the accounts' shared
    limiter, and the estimate at the accounts' current rates; with WAIT, then follow the
    mirroring of every task it queued until the workers are done with them (report.mirroring,
    ON_MIRROR hearing of every look); under the rules in force, as the workers run them. KeyError
    for an unknown link, BackfillBusy when a sync run
    held a pair's tasks too long (a rerun resumes)."""
    settings = get_settings()
    link = link_in_force(link_name, links_path, settings)
    store = redis.Redis.from_url(settings.redis_url)
    limiter = AccountLimiter(store, rate_per_s=settings.rate_per_s)
    rates = {conf.account: 1.0 / max(limiter.interval_s(conf.account), 1e-9) for conf in link.sides.values()}
    enqueuer = None if dry_run else Enqueuer(settings.redis_url)
    clients = {side: cli_client(link, side, limiter) for side in link.sides}
    try:
        report = run_backfill(link, clients, store, enqueuer, dry_run=dry_run, rate_per_s=rates,
                              on_plan=on_plan, on_item=on_item)
        if wait and not dry_run:
            report.mirroring = follow_mirroring(store, link.name, report.queued, on_progress=on_mirror)
        return report
    finally:
        for client in clients.values():
            client.close()
        if enqueuer is not None:
            enqueuer.close()
        store.close()
