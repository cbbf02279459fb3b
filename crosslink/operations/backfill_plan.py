"""What a backfill decides, with no I/O: which tasks match, how a pair is seeded, what it costs.

A backfill (crosslink/operations/backfill.py) lists both sides' scopes and hands them here:
matching by name (:func:`match_tasks`), the snapshots seeded for a hand-made pair so the first
sync settles its differences by the link's owner rules (:func:`seed_snapshots`), which task gets
the mirror marker (:func:`marker_side`), what the pair's first syncs will overwrite
(:func:`pairing_overwrites`), the whole plan (:func:`plan_backfill`) and its cost in requests
(:func:`estimate`). Pure functions of the listings and the registry, so each rule is tested on
its own and a dry run shows exactly what a real run would do.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.links import Link, Side
from workers.canonical import canonical_task, in_scope
from workers.field_diff import changed_fields, flows
from workers.plan import plan_task_sync
from workers.state import parse_marker
from workers.sync import expected_view, people_names

# Planfix task filter types (API-NOTES.md section 3).
FILTER_PROJECT = 5
FILTER_TEMPLATE = 51

# A snapshot value no canonical value equals: the key counts as changed on that side, so its sync
# carries the value (only where the counterpart differs). Seeded for the side each field prefers.
UNAGREED = {"crosslink": "unagreed-at-backfill"}
# Requests the workers spend per queued sync, for the estimate: the source side reads the task,
# its comments, checklist and files; the other side gets a create or read, the read-back after a
# write, its comment and checklist reads. Measured in tests/e2e/test_backfill.py: about 3.7 on
# each side. Comments add one write each and are not counted: the listing does not say how many.
SOURCE_CALLS_PER_SYNC = 4
TARGET_CALLS_PER_SYNC = 4


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

