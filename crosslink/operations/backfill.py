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

Progress is kept in Redis per link (:class:`BackfillProgress`), so a backfill stopped half way
continues where it stopped: pairs are never made twice (the registry excludes them from the next
matching) and a task already queued is not queued again. The record is dropped once a run
finishes, so a later backfill starts afresh (and still skips whatever is linked by then).

It lives with the operator commands rather than among the producers: besides queueing jobs it
writes pairs and seeded snapshots into the workers' registry (workers.state) and reads tasks
through the workers' canonical views, which producers may not import.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from planfix.client import MAX_PAGE_SIZE, PlanfixClient
from crosslink.queue.enqueue import Enqueuer
from schemas.links import Link, Side
from workers.canonical import canonical_task, in_scope, task_fields
from workers.field_diff import changed_fields, flows
from workers.plan import plan_task_sync
from workers.sync import expected_view, people_names
from workers.idempotency import TaskLock
from crosslink.queue.names import lock_key
from workers.state import LinkState, mirror_marker, mirror_source_id, parse_marker

# Planfix task filter types (API-NOTES.md section 3).
FILTER_PROJECT = 5
FILTER_TEMPLATE = 51

PROGRESS_KEY = "crosslink:backfill:{link}"
# A snapshot value no canonical value equals: the key counts as changed on that side, so its sync
# carries the value (only where the counterpart differs). Seeded for the side each field prefers.
UNAGREED = {"crosslink": "unagreed-at-backfill"}
# Requests the workers spend per queued sync, for the estimate: the source side reads the task,
# its comments, checklist and files; the other side gets a create or read, the read-back after a
# write, its comment and checklist reads. Measured in tests/e2e/test_backfill.py: about 3.7 on
# each side. Comments add one write each and are not counted: the listing does not say how many.
SOURCE_CALLS_PER_SYNC = 4
TARGET_CALLS_PER_SYNC = 4
# Stages of one item in the progress record, in order.
PAIRED, MARKED, QUEUED = "paired", "marked", "queued"
# Pairing waits for a live sync run of either task to finish: runs take seconds at Planfix's
# pace, so a lock held longer than this is a stuck run, reported rather than waited out.
LOCK_WAIT_S = 120.0
LOCK_RETRY_S = 0.5
# The pairing itself is a few Redis commands.
PAIRING_LOCK_TTL_MS = 10_000


class BackfillBusy(Exception):
    """A sync run held the tasks to pair for too long; the backfill can simply be run again."""


# --- pure decisions ---------------------------------------------------------------------------

def scope_filters(side: Side) -> list[dict[str, Any]]:
    """The task-list filters that select SIDE's scope on the server, where one exists (other
    scope kinds list every task and :func:`in_scope` decides locally)."""
    kind_to_type = {"project": FILTER_PROJECT, "template": FILTER_TEMPLATE}
    filter_type = kind_to_type.get(side.scope.kind)
    if filter_type is None:
        return []
    return [{"type": filter_type, "operator": "equal", "value": side.scope.value}]


def normalise_name(name: Any) -> str:
    """The matching key of a task name: Unicode-normalised (NFKC), case-folded, inner runs of
    whitespace collapsed to one space, outer whitespace dropped. "" never matches anything."""
    text = unicodedata.normalize("NFKC", str(name or "")).casefold()
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Candidate:
    """One task as the matcher sees it: ``linked`` = already paired in the registry or carrying
    (or named by) a mirror marker of this link."""

    number: int
    name: str
    in_scope: bool = True
    linked: bool = False


@dataclass(frozen=True)
class Ambiguous:
    """A name found on both sides with more than one candidate on at least one of them."""

    name: str
    left: tuple[int, ...]
    right: tuple[int, ...]


@dataclass(frozen=True)
class Matching:
    pairs: tuple[tuple[int, int], ...]
    ambiguous: tuple[Ambiguous, ...]
    unmatched_left: tuple[int, ...]
    unmatched_right: tuple[int, ...]


def match_tasks(left: Sequence[Candidate], right: Sequence[Candidate]) -> Matching:
    """Pair the LEFT side's tasks with the RIGHT side's ones made by hand before the link.

    Rule: only tasks in their side's scope and not yet linked take part. Two tasks match when
    their :func:`normalise_name` keys are equal and non-empty and that key belongs to exactly
    one candidate on each side. A key with several candidates on either side (and at least one
    on the other) is ambiguous: none of its tasks is paired or queued (creating a mirror could
    duplicate the hand copy; an operator decides). Everything else eligible is unmatched and
    gets a mirror. Results are sorted, so a rerun on the same data plans the same.
    """
    def eligible(items: Sequence[Candidate]) -> dict[int, str]:
        return {c.number: normalise_name(c.name) for c in items if c.in_scope and not c.linked}

    lefts, rights = eligible(left), eligible(right)
    by_key: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for number, key in lefts.items():
        if key:
            by_key[key][0].append(number)
    for number, key in rights.items():
        if key:
            by_key[key][1].append(number)
    pairs, ambiguous, taken_left, taken_right = [], [], set(), set()
    for key, (ls, rs) in sorted(by_key.items()):
        if not ls or not rs:
            continue
        if len(ls) == 1 and len(rs) == 1:
            pairs.append((ls[0], rs[0]))
        else:
            ambiguous.append(Ambiguous(key, tuple(sorted(ls)), tuple(sorted(rs))))
        taken_left.update(ls)
        taken_right.update(rs)
    return Matching(tuple(sorted(pairs)), tuple(ambiguous),
                    tuple(sorted(set(lefts) - taken_left)), tuple(sorted(set(rights) - taken_right)))


def _counter_key(link: Link, key: str, side: str) -> str:
    """SIDE's canonical KEY as named on the other side (custom fields have per-side ids)."""
    if key.startswith("cf:"):
        rule = link.fields.custom_rule(side, int(key[3:]))
        return f"cf:{rule.id_on(link.other(side))}" if rule else key
    return key


def carries(link: Link, key: str, side: str, prevailing: str) -> bool:
    """Whether SIDE's value of KEY should win on a pair made by hand: it flows from SIDE, and
    either nothing flows back or SIDE is preferred: the field's owner, else the PREVAILING side
    (the link's first side: its tasks count as the originals)."""
    if not flows(link, key, side):
        return False
    other = link.other(side)
    if not flows(link, _counter_key(link, key, side), other):
        return True
    owner = getattr(link.fields.rule_for(key, side), "owner", None)
    if owner in (side, other):
        return owner == side
    return side == prevailing


def seed_snapshots(link: Link, prevailing: str, views: Mapping[str, Mapping[str, Any]]
                   ) -> dict[str, dict[str, Any]]:
    """The snapshots to seed for a hand-made pair, from both sides' canonical VIEWS.

    Each side's snapshot is its current view, except that the keys it should win
    (:func:`carries`) are :data:`UNAGREED`: its sync sees them changed and carries them, the
    other side sees its own value unchanged and carries nothing back. Whichever side's sync runs
    first, the pair converges on the preferred values; fields already equal cost no write.
    """
    return {side: {key: (UNAGREED if carries(link, key, side, prevailing) else value)
                   for key, value in view.items()}
            for side, view in views.items()}


def pairing_overwrites(link: Link, snapshots: Mapping[str, Mapping[str, Any]],
                       views: Mapping[str, Mapping[str, Any]], raw: Mapping[str, Mapping[str, Any]],
                       counterpart: Callable[[str, int], int | None]) -> tuple[dict[str, Any], ...]:
    """What pairing two tasks will overwrite, field by field: each side's first sync, planned
    from the seeded SNAPSHOTS as it will run (workers.plan), and every value it writes over on
    the other side (ON: the side whose value is lost, FROM: it, TO: the winner's, BY: the rule,
    the field's owner or, with none, the link's first side as the original). Pure. A dry run
    shows it, so nobody learns after the pairing that their own description is gone."""
    found = []
    for side in link.sides:
        other = link.other(side)
        plan = plan_task_sync(link, side, views[side], snapshots[side], views[other], snapshots[other],
                              counterpart, people_names(raw[side]))
        written = expected_view(views[other], plan.update_body)
        if plan.status_path:
            written["status"] = plan.status_path[-1]
        for key, value in sorted(written.items()):
            before = views[other].get(key)
            if changed_fields({key: before}, {key: value}):
                owner = getattr(link.fields.rule_for(_counter_key(link, key, other), side), "owner", None)
                found.append({"on": other, "field": key, "from": before, "to": value,
                              "by": f"owner: {owner}" if owner in link.sides else f"{side} is the original"})
    return tuple(found)


def marker_side(link: Link, raw: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Which task of a hand-made pair gets the mirror marker: the second side's (so the first
    side's task reads as the original), else the first's; only a task whose sourceObjectId and
    sourceDataVersion are both empty, so no other integration's data is overwritten. None when
    neither is free: the pair lives in the registry only (relink cannot rebuild it)."""
    first, second = list(link.sides)
    for side in (second, first):
        task = raw[side]
        if not task.get("sourceObjectId") and not task.get("sourceDataVersion"):
            return side
    return None


@dataclass(frozen=True)
class PairPlan:
    sides: tuple[str, str]  # (link's first side, second side)
    numbers: tuple[int, int]
    marker_on: str | None
    snapshots: dict[str, dict[str, Any]]
    # What the pair's first syncs will write over, field by field (pairing_overwrites).
    overwrites: tuple[dict[str, Any], ...] = ()

    @property
    def item(self) -> str:
        return f"pair:{self.sides[0]}:{self.numbers[0]}:{self.sides[1]}:{self.numbers[1]}"


@dataclass(frozen=True)
class BackfillPlan:
    pairs: tuple[PairPlan, ...]
    create: tuple[tuple[str, int], ...]  # (side, number) to queue: their mirrors get created
    ambiguous: tuple[Ambiguous, ...]
    already_linked: dict[str, int]
    out_of_scope: dict[str, int]


def pair_plan(link: Link, raw: Mapping[str, Mapping[str, Any]],
              counterpart: Callable[[str, int], int | None]) -> PairPlan:
    """The plan to pair RAW's two tasks (side -> raw task, the link's first side as the original):
    the marker's side, the seeded snapshots, and what the pair's first syncs will overwrite."""
    first, second = list(link.sides)
    views = {side: canonical_task(raw[side], link, side) for side in (first, second)}
    seeded = seed_snapshots(link, first, views)
    return PairPlan((first, second), (int(raw[first]["id"]), int(raw[second]["id"])), marker_side(link, raw),
                    seeded, pairing_overwrites(link, seeded, views, raw, counterpart))


def counterpart_in(registry: Mapping[str, int]) -> Callable[[str, int], int | None]:
    """The registry's lookup (side, number) -> counterpart, as the planner asks it."""
    return lambda side, number: registry.get(f"{side}:{number}")


def plan_backfill(link: Link, listings: Mapping[str, Sequence[Mapping[str, Any]]],
                  registry: Mapping[str, int]) -> BackfillPlan:
    """What a backfill does, from both sides' LISTINGS (raw tasks with sync fields) and the
    link's task REGISTRY ("side:number" -> counterpart).

    A task is linked when the registry has it, when it carries a marker of this link (it is a
    mirror), or when a marker on the other side names it (its mirror exists, even if the registry
    has not caught up).
    """
    first, second = list(link.sides)
    named: dict[str, set[int]] = {side: set() for side in link.sides}
    for side, tasks in listings.items():
        for task in tasks:
            marker = parse_marker(task.get("sourceDataVersion"))
            if marker and marker[0] == link.name and marker[1] in named:
                named[marker[1]].add(marker[2])
    candidates: dict[str, list[Candidate]] = {}
    raw_by: dict[str, dict[int, Mapping[str, Any]]] = {}
    linked_count: dict[str, int] = {}
    outside: dict[str, int] = {}
    for side in (first, second):
        items = []
        for task in listings[side]:
            number = int(task["id"])
            marker = parse_marker(task.get("sourceDataVersion"))
            linked = (f"{side}:{number}" in registry or number in named[side]
                      or bool(marker and marker[0] == link.name))
            items.append(Candidate(number, task.get("name") or "", in_scope(link, side, task), linked))
        candidates[side] = items
        raw_by[side] = {int(task["id"]): task for task in listings[side]}
        linked_count[side] = sum(1 for c in items if c.linked and c.in_scope)
        outside[side] = sum(1 for c in items if not c.in_scope)
    matching = match_tasks(candidates[first], candidates[second])
    pairs = []
    for left, right in matching.pairs:
        raw = {first: raw_by[first][left], second: raw_by[second][right]}
        pairs.append(pair_plan(link, raw, counterpart_in(registry)))
    create = tuple([(first, n) for n in matching.unmatched_left]
                   + [(second, n) for n in matching.unmatched_right])
    return BackfillPlan(tuple(pairs), create, matching.ambiguous, linked_count, outside)


@dataclass(frozen=True)
class Estimate:
    """Requests the backfill and the syncs it queues will spend per account, and the time that
    takes at each account's rate (the slower account decides)."""

    requests: dict[str, int]
    seconds: float


def estimate(link: Link, plan: BackfillPlan, pages: Mapping[str, int],
             rate_per_s: Mapping[str, float]) -> Estimate:
    """Listing pages + one marker write per pair + per queued sync SOURCE_CALLS_PER_SYNC on its
    side and TARGET_CALLS_PER_SYNC on the other (comments not counted: see the constants)."""
    accounts = {side: link.sides[side].account for side in link.sides}
    requests: dict[str, int] = defaultdict(int)
    for side, count in pages.items():
        requests[accounts[side]] += count
    syncs: list[str] = [side for side, _ in plan.create]
    for pair in plan.pairs:
        if pair.marker_on:
            requests[accounts[pair.marker_on]] += 1
        syncs.extend(pair.sides)
    for side in syncs:
        requests[accounts[side]] += SOURCE_CALLS_PER_SYNC
        requests[accounts[link.other(side)]] += TARGET_CALLS_PER_SYNC
    seconds = max((count / rate_per_s[account] if rate_per_s.get(account) else 0.0)
                  for account, count in requests.items()) if requests else 0.0
    return Estimate(dict(requests), seconds)


# --- progress in Redis ------------------------------------------------------------------------

@dataclass
class BackfillProgress:
    """Per link: the pages listed per side and the stage each item (pair or queued task) reached.

    Hash crosslink:backfill:{link}: "pages:{side}" -> pages listed in the current run,
    "item:pair:..." / "item:queue:{side}:{n}" -> stage, "started" -> time of the first run.
    """

    redis: redis.Redis
    link: str

    @property
    def key(self) -> str:
        return PROGRESS_KEY.format(link=self.link)

    def stages(self) -> dict[str, str]:
        raw = self.redis.hgetall(self.key)
        return {_text(k)[5:]: _text(v) for k, v in raw.items() if _text(k).startswith("item:")}

    def started(self) -> float | None:
        value = self.redis.hget(self.key, "started")
        return float(value) if value is not None else None

    def begin(self, now: float) -> bool:
        """Open a run; False when an interrupted one is being continued."""
        return bool(self.redis.hsetnx(self.key, "started", now))

    def set_stage(self, item: str, stage: str, pipe: Any = None) -> None:
        (pipe or self.redis).hset(self.key, f"item:{item}", stage)

    def set_pages(self, side: str, pages: int) -> None:
        self.redis.hset(self.key, f"pages:{side}", pages)

    def finish(self) -> None:
        self.redis.delete(self.key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the run ----------------------------------------------------------------------------------

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

    def as_dict(self) -> dict[str, Any]:
        return {"link": self.link, "dry_run": self.dry_run, "listed": self.listed, "pages": self.pages,
                "already_linked": self.already_linked, "out_of_scope": self.out_of_scope,
                "pairs": self.pairs, "create": [f"{s}:{n}" for s, n in self.create],
                "ambiguous": self.ambiguous, "linked_meanwhile": self.linked_meanwhile,
                "markers_unsafe": self.markers_unsafe,
                "resumed": self.resumed, "complete": self.complete, "handled": self.handled,
                "total": self.total, "awaiting_decision": self.awaiting,
                "estimate": (None if self.estimate is None else
                             {"requests": self.estimate.requests, "seconds": round(self.estimate.seconds, 1)})}


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
    listings: dict[str, list[dict[str, Any]]] = {}
    for side in link.sides:
        tasks, pages = list_scope(link, side, clients[side])
        listings[side] = tasks
        report.listed[side], report.pages[side] = len(tasks), pages
        if not dry_run:
            progress.set_pages(side, pages)
    stages = {} if dry_run else progress.stages()
    plan = plan_backfill(link, listings, state.pairs("task"))
    # Pairs an interrupted run made are in the registry now, so the new plan does not have them:
    # finish their marker and queueing from the record.
    by_item = {pair.item: pair for pair in plan.pairs}
    leftovers = [item for item, stage in stages.items()
                 if item.startswith("pair:") and stage != QUEUED and item not in by_item]
    report.already_linked, report.out_of_scope = plan.already_linked, plan.out_of_scope
    first, second = list(link.sides)
    report.ambiguous = [{"name": a.name, first: list(a.left), second: list(a.right)}
                        for a in plan.ambiguous]
    todo_pairs = [pair for pair in plan.pairs if stages.get(pair.item) != QUEUED]
    todo_create = [(side, n) for side, n in plan.create if stages.get(f"queue:{side}:{n}") != QUEUED]
    report.total = len(todo_pairs) + len(todo_create) + len(leftovers)
    report.estimate = estimate(link, plan, report.pages, rate_per_s or {})
    report.markers_unsafe = sum(1 for pair in plan.pairs if pair.marker_on is None)
    report.awaiting = state.awaiting()
    if dry_run:
        report.pairs = [_pair_view(pair) for pair in plan.pairs]
        report.create = list(plan.create)
        if on_plan:
            on_plan(report)
        report.complete = True
        return report
    if on_plan:
        on_plan(report)
    assert enqueuer is not None, "a backfill that writes needs an enqueuer"

    def budget_left() -> bool:
        return max_items is None or report.handled < max_items

    def handled() -> None:
        report.handled += 1
        if on_item:
            on_item(report)

    for ambiguous in plan.ambiguous:
        # Neither paired nor mirrored: each waits for a person (crosslink pair / mirror), and
        # no sync run mirrors it meanwhile (workers.plan.older_than_link).
        for side, numbers in ((first, ambiguous.left), (second, ambiguous.right)):
            for number in numbers:
                state.await_decision(side, number, {"name": raw_name(listings[side], number), "ambiguous": True,
                                                    "at": clock()})
    report.awaiting = state.awaiting()
    for item in sorted(leftovers):
        if not budget_left():
            return report
        _finish_leftover(link, item, stages[item], listings, clients, progress, enqueuer)
        handled()
    for pair in todo_pairs:
        if not budget_left():
            return report
        stage = stages.get(pair.item)
        if stage is None:
            if not _pair_unless_linked(link, pair, store, progress, sleep):
                # Live traffic mirrored one of the two since the listing: that pair stands,
                # and the hand-made copy stays unpaired for a person to look at.
                progress.set_stage(pair.item, QUEUED)
                report.linked_meanwhile.append(_pair_view(pair))
                handled()
                continue
            stage = PAIRED
        if stage == PAIRED:
            _write_marker(link, pair.sides, pair.numbers, pair.marker_on, clients)
            progress.set_stage(pair.item, MARKED)
        for side, number in zip(pair.sides, pair.numbers):
            enqueuer.sync(link.name, side, number)
        progress.set_stage(pair.item, QUEUED)
        report.pairs.append(_pair_view(pair))
        handled()
    for side, number in todo_create:
        if not budget_left():
            return report
        # Matched by no hand copy: backfill decides it gets a mirror.
        state.decide_mirror(side, number, by="backfill", at=clock())
        enqueuer.sync(link.name, side, number)
        progress.set_stage(f"queue:{side}:{number}", QUEUED)
        report.create.append((side, number))
        handled()
    report.complete = True
    progress.finish()
    return report


def raw_name(tasks: Sequence[Mapping[str, Any]], number: int) -> str:
    return next((str(task.get("name") or "") for task in tasks if int(task["id"]) == number), "")


class DecisionRefused(Exception):
    """A person's pairing or mirroring that cannot be done as asked (the reason says why)."""


def pair_by_decision(link: Link, numbers: Mapping[str, int], clients: Mapping[str, PlanfixClient],
                     store: redis.Redis, enqueuer: Enqueuer,
                     sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """A person pairs two given tasks (NUMBERS: side -> task number) as backfill pairs a match:
    snapshots seeded by the link's owner rules, the mirror marker on the hand copy, then a sync
    of both. Refused when either is paired already or is a mirror of this link."""
    first, second = list(link.sides)
    raw = {side: clients[side].get_task(numbers[side], fields=",".join(dict.fromkeys([*task_fields(link, side), "name"])))
           for side in (first, second)}
    for side in (first, second):
        marker = parse_marker(raw[side].get("sourceDataVersion"))
        if marker and marker[0] == link.name:
            raise DecisionRefused(f"{side} #{numbers[side]} is a mirror of {marker[1]} #{marker[2]} already")
    state = LinkState(store, link.name)
    pair = pair_plan(link, raw, lambda side, number: state.counterpart("task", side, number))
    if not _pair_unless_linked(link, pair, store, None, sleep):
        paired = {side: state.counterpart("task", side, numbers[side]) for side in (first, second)}
        raise DecisionRefused("already paired: " + ", ".join(
            f"{side} #{numbers[side]} (with #{other})" for side, other in paired.items() if other is not None))
    _write_marker(link, pair.sides, pair.numbers, pair.marker_on, clients)
    state.decided_pair(zip(pair.sides, pair.numbers))
    for side, number in zip(pair.sides, pair.numbers):
        enqueuer.sync(link.name, side, number)
    return _pair_view(pair)


def mirror_by_decision(link: Link, side: str, number: int, store: redis.Redis, enqueuer: Enqueuer,
                       by: str, at: float) -> None:
    """A person decides that SIDE's task NUMBER, older than the link, gets a mirror: its sync
    is queued and creates one (refused when it is paired already)."""
    state = LinkState(store, link.name)
    counterpart = state.counterpart("task", side, number)
    if counterpart is not None:
        raise DecisionRefused(f"{side} #{number} is paired with #{counterpart} already")
    state.decide_mirror(side, number, by=by, at=at)
    enqueuer.sync(link.name, side, number)


def _pair_unless_linked(link: Link, pair: PairPlan, store: redis.Redis, progress: BackfillProgress | None,
                        sleep: Callable[[float], None]) -> bool:
    """Write PAIR into the registry with its seeded snapshots, unless either task got a
    counterpart since the listing; False then. Done under both tasks' sync locks, so no live
    sync run is creating a mirror of either meanwhile (one that ran already is in the registry)."""
    lock = TaskLock(store, tuple(sorted(lock_key(link.name, side, number)
                                        for side, number in zip(pair.sides, pair.numbers))))
    deadline = time.monotonic() + LOCK_WAIT_S
    while not lock.acquire(PAIRING_LOCK_TTL_MS):
        if time.monotonic() > deadline:
            raise BackfillBusy(f"{pair.item}: a sync run has held these tasks for over {LOCK_WAIT_S:.0f}s; "
                               "run the backfill again (it resumes)")
        sleep(LOCK_RETRY_S)
    try:
        state = LinkState(store, link.name)
        if any(state.counterpart("task", side, number) is not None
               for side, number in zip(pair.sides, pair.numbers)):
            return False
        pipe = store.pipeline(transaction=True)
        seeding = LinkState(pipe, link.name)
        seeding.pair("task", pair.sides[0], pair.numbers[0], pair.sides[1], pair.numbers[1])
        seeding.save_snapshots({(side, number): pair.snapshots[side]
                                for side, number in zip(pair.sides, pair.numbers)})
        if progress is not None:
            progress.set_stage(pair.item, PAIRED, pipe)
        pipe.execute()
        return True
    finally:
        lock.release()


def _pair_view(pair: PairPlan) -> dict[str, Any]:
    return {pair.sides[0]: pair.numbers[0], pair.sides[1]: pair.numbers[1], "marker_on": pair.marker_on,
            "overwrites": list(pair.overwrites)}


def _write_marker(link: Link, sides: tuple[str, str], numbers: tuple[int, int], marker_on: str | None,
                  clients: Mapping[str, PlanfixClient]) -> None:
    """Mark MARKER_ON's task as the mirror of the other one: the same fields a created mirror
    carries, set as absolute values (repeating it changes nothing). A 202 means Planfix applies it
    later; the registry already holds the pair, so nothing waits on it."""
    if marker_on is None:
        return
    number = numbers[sides.index(marker_on)]
    origin = link.other(marker_on)
    origin_number = numbers[sides.index(origin)]
    clients[marker_on].update_task(number, {
        "sourceObjectId": mirror_source_id(link.name, origin, "task", origin_number),
        "sourceDataVersion": mirror_marker(link.name, origin, origin_number)}, silent=True)


def _finish_leftover(link: Link, item: str, stage: str, listings: Mapping[str, list[dict[str, Any]]],
                     clients: Mapping[str, PlanfixClient], progress: BackfillProgress,
                     enqueuer: Enqueuer) -> None:
    """Finish a pair an interrupted run made (stage paired or marked): the marker, if its task
    is still free of integration data (the interrupted run may have written it already), then
    the queueing."""
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
            _write_marker(link, sides, numbers, on, clients)
        progress.set_stage(item, MARKED)
    for side, number in zip(sides, numbers):
        enqueuer.sync(link.name, side, number)
    progress.set_stage(item, QUEUED)
