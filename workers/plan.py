"""The whole decision for one sync run: what to write to a task's counterpart, and nothing more.

It combines the small decisions (field_diff, conflict, status_map, delegation) into a SyncPlan the
sync job executes: one create or update body (without status), then the statuses to set one after
another, then the rule-driven moves of the source. Writes that would change nothing are left out,
so a repeated event, or the echo of the sync's own write, plans nothing.

Assumptions:
- Snapshots are the canonical views of both tasks as of the last state both sides agreed on (saved
  by the sync after each run). A field counts as changed on a side when it differs from that
  side's snapshot; no source snapshot = every field changed; no target snapshot = the target
  changed nothing (a first sync, or state rebuilt by relink: the source wins).
- Only fields the source changed are carried, and only when the link lets them flow from the
  source and the conflict rule says so; the target's own changes travel in its own sync run.
- On create, everything mapped that flows from the source goes into the body (empty values are
  left out), in the target side's ``create`` process/project/template. The name always goes, even
  when the link does not sync names, because a task needs one.
- ``counterpart(side, number)`` is the registry lookup of SIDE's task NUMBER's mirror; a parent
  without a mirror yet is parked (the hierarchy follows once the parent is mirrored).
- Parent is cleared with {"id": 0} [verify: what real Planfix accepts to detach a subtask].
- Status ids in the plan are the target's (status_path) or (side, id) pairs (source_status_moves).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.links import Link
from workers.conflict import owner_of, resolve
from workers.delegation import delegate, real_assignee_names
from workers.field_diff import changed_fields, flows
from workers.status_map import MAX_RULE_ROUNDS, decide_status, equivalent, path_within, rule_moves

PLAIN_FIELDS = ("name", "description", "priority")
DATE_FIELDS = {"start_date": ("startDateTime", "hasStartDate"), "end_date": ("endDateTime", "hasEndDate")}
# Parent 0 detaches a subtask (see the module docstring).
NO_PARENT = 0


@dataclass(frozen=True)
class SyncPlan:
    create: bool
    update_body: dict[str, Any]
    status_path: tuple[int, ...] = ()
    source_status_moves: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()
    parked: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # canonical keys (source side) whose value is carried
    # The source's status move the target's process does not allow (source status, the
    # target's, why): the sides stay apart, and people on both are told (workers.sync).
    held_status: tuple[int, int | None, str] | None = None
    # Target values a person changed since the last sync that this plan writes over, as the
    # source's change wins the field (target key, the value lost, the field's owner: None when
    # it has none and the later change wins): told on the target.
    overwritten: tuple[tuple[str, Any, str | None], ...] = ()
    # Source values a person changed since the last sync that lose to the target's own change
    # (source key, the value that loses, the owner): told on the source, whichever run comes first.
    yielded: tuple[tuple[str, Any, str | None], ...] = ()

    @property
    def is_noop(self) -> bool:
        return not (self.create or self.update_body or self.status_path or self.source_status_moves)


class _Planner:
    def __init__(self, link: Link, source_side: str, source_now: Mapping[str, Any],
                 source_snapshot: Mapping[str, Any] | None, target_now: Mapping[str, Any] | None,
                 target_snapshot: Mapping[str, Any] | None, counterpart: Callable[[str, int], int | None],
                 names: Mapping[str, str], landing: Mapping[str, Any]):
        self.link, self.source, self.target = link, source_side, link.other(source_side)
        self.now, self.other_now, self.landing = source_now, target_now or {}, landing
        self.create = target_now is None
        self.counterpart, self.names = counterpart, names
        self.source_changed = changed_fields(source_snapshot, source_now)
        self.target_changed = (changed_fields(target_snapshot, target_now)
                               if target_now is not None and target_snapshot is not None else set())
        self.body: dict[str, Any] = {}
        self.custom: list[dict[str, Any]] = []
        self.carried: list[str] = []
        self.notes: list[str] = []
        self.parked: list[str] = []
        self.path: list[int] = []
        self.source_moves: list[tuple[str, int]] = []
        self.held: tuple[int, int | None, str] | None = None
        # Source key -> (target key, the field's owner) of each field both sides changed that
        # the source wins (contested) or loses (yielding).
        self.contested: dict[str, tuple[str, str | None]] = {}
        self.yielding: dict[str, tuple[str, str | None]] = {}

    # -- which fields go ----------------------------------------------------------------------
    def carries(self, key: str, target_key: str | None = None) -> bool:
        if not flows(self.link, key, self.source):
            return False
        if self.create:
            return True
        both = key in self.source_changed and (target_key or key) in self.target_changed
        applied = resolve(self.link, key, self.source, key in self.source_changed,
                          (target_key or key) in self.target_changed) == "apply"
        if both:
            (self.contested if applied else self.yielding)[key] = (target_key or key,
                                                                   owner_of(self.link, key, self.source))
        return applied

    def target_value(self, key: str) -> Any:
        """The source's value of KEY as written on the target (a custom field converted)."""
        for rule in self.link.fields.custom:
            if f"cf:{rule.id_on(self.source)}" == key:
                return rule.convert(self.now.get(key), self.source)
        return self.now.get(key)

    def differs(self, target_key: str, value: Any) -> bool:
        """Whether VALUE must be written: the target shows another, or a write Planfix queued
        will put another there after this one is read (it lands before what is sent now). A
        queued value equal to VALUE is sent again all the same while the target does not show
        it: a queued write is only known to land once seen."""
        if self.create:
            return value not in (None, "", [])
        if changed_fields({target_key: self.other_now.get(target_key)}, {target_key: value}):
            return True
        return target_key in self.landing and bool(
            changed_fields({target_key: self.landing[target_key]}, {target_key: value}))

    # -- fields --------------------------------------------------------------------------------
    def plain(self) -> None:
        for key in PLAIN_FIELDS:
            must_name = self.create and key == "name"
            if (must_name or self.carries(key)) and self.differs(key, self.now.get(key)):
                self.body[key] = self.now.get(key)
                self.carried.append(key)
        for key, (write_key, has_key) in DATE_FIELDS.items():
            value = self.now.get(key)
            if self.carries(key) and self.differs(key, value):
                if value is None:
                    self.body[has_key] = False
                else:
                    self.body[write_key] = value
                self.carried.append(key)

    def parent(self) -> None:
        if not self.carries("parent"):
            return
        number = self.now.get("parent")
        mapped = None
        if number is not None:
            mapped = self.counterpart(self.source, number)
            if mapped is None:
                self.parked.append(f"{self.source} parent #{number} has no mirror on the {self.target} side yet; "
                                   "the hierarchy follows once it is mirrored")
                return
        if self.differs("parent", mapped):
            self.body["parent"] = {"id": mapped if mapped is not None else NO_PARENT}
            self.carried.append("parent")

    def assignees(self) -> None:
        if not self.carries("assignees"):
            return
        delegation = delegate(self.link, self.source, self.now.get("assignees") or [], self.names,
                              None if self.create else self.other_now.get("assignees") or [])
        wanted_list = list(delegation.assignees)
        if self.differs("assignees", wanted_list):
            self.body["assignees"] = {"users": [{"id": person} for person in wanted_list]}
            self.carried.append("assignees")
        note_field = self.link.sides[self.target].assignee_note_field
        if note_field is None and (self.create or "assignees" in self.source_changed):
            # The real assignee changed even when the stand-in on the target stays the same:
            # the target side must still learn who works on the task now. Where the target has
            # a field for the real assignees, that field says it on the card, in the same write;
            # a comment would repeat it, and cost a request, at every reassignment.
            self.notes.extend(delegation.notes)
        if note_field is not None:
            text = real_assignee_names(delegation, self.names) or None
            if self.differs(f"cf:{note_field}", text):
                self.custom.append({"field": {"id": note_field}, "value": text})

    def custom_fields(self) -> None:
        for rule in self.link.fields.custom:
            key, target_key = f"cf:{rule.id_on(self.source)}", f"cf:{rule.id_on(self.target)}"
            if not self.carries(key, target_key):
                continue
            value = rule.convert(self.now.get(key), self.source)
            if self.differs(target_key, value):
                self.custom.append({"field": {"id": rule.id_on(self.target)}, "value": value})
                self.carried.append(key)

    # -- statuses ------------------------------------------------------------------------------
    def target_position(self) -> int | None:
        if self.path:
            return self.path[-1]
        if self.create:
            return self.link.sides[self.target].create.initial_status
        return self.other_now.get("status")

    def source_position(self) -> int | None:
        return self.source_moves[-1][1] if self.source_moves else self.now.get("status")

    def statuses(self) -> None:
        source_status = self.now.get("status")
        reached: list[tuple[str, int]] = []
        if self.carries("status"):
            decision = decide_status(self.link, self.source, source_status,
                                     None if self.create else self.other_now.get("status"))
            if decision.kind != "park" and not decision.path and "status" in self.landing:
                # The target shows the status already, but a queued move will take it elsewhere.
                decision = decide_status(self.link, self.source, source_status, self.landing["status"])
            if decision.kind == "park":
                self.parked.append(decision.reason)
                if source_status is not None and not self.create:
                    self.held = (source_status, self.other_now.get("status"), decision.reason)
            self.path.extend(decision.path)
            if decision.path:
                reached.append((self.target, decision.path[-1]))
        if source_status is not None and (self.create or "status" in self.source_changed):
            reached.insert(0, (self.source, source_status))
        self.apply_rules(reached)

    def apply_rules(self, reached: list[tuple[str, int]]) -> None:
        done: set[tuple[str, int]] = set()
        for _ in range(MAX_RULE_ROUNDS):
            following: list[tuple[str, int]] = []
            for side, status in reached:
                for then_side, then_status in rule_moves(self.link, side, status):
                    if (then_side, then_status) in done:
                        continue
                    done.add((then_side, then_status))
                    if self.rule_move(side, status, then_side, then_status):
                        following.append((then_side, then_status))
            if not following:
                return
            reached = following
        self.parked.append(f"status rules still firing after {MAX_RULE_ROUNDS} rounds; check them for a cycle")

    def rule_move(self, side: str, status: int, then_side: str, then_status: int) -> bool:
        """Plan one rule's move; True when a move was planned."""
        why = f"rule ({side} {status} -> {then_side} {then_status})"
        if then_side == self.target:
            decision = path_within(self.link, self.target, self.target_position(), then_status)
            if decision.kind == "park":
                self.parked.append(f"{why}: {decision.reason}")
            self.path.extend(decision.path)
            return bool(decision.path)
        decision = path_within(self.link, self.source, self.source_position(), then_status)
        if decision.kind == "park":
            self.parked.append(f"{why}: {decision.reason}")
        if not decision.path:
            return False
        self.source_moves.extend((self.source, step) for step in decision.path)
        # The source moved on its own side: the counterpart must follow, or the two disagree.
        if not equivalent(self.link, self.source, then_status, self.target_position()):
            follow = decide_status(self.link, self.source, then_status, self.target_position())
            if follow.kind == "park":
                self.parked.append(f"{why}: {follow.reason}")
            self.path.extend(follow.path)
        return True

    # -- result --------------------------------------------------------------------------------
    def plan(self) -> SyncPlan:
        self.plain()
        self.parent()
        self.assignees()
        self.custom_fields()
        self.statuses()
        if self.custom:
            self.body["customFieldData"] = self.custom
        if self.create:
            settings = self.link.sides[self.target].create
            if settings.process is not None:
                self.body["processId"] = settings.process
            if settings.project is not None:
                self.body["project"] = {"id": settings.project}
            if settings.template is not None:
                self.body["template"] = {"id": settings.template}
        overwritten = [(target_key, self.other_now.get(target_key), owner)
                       for key, (target_key, owner) in sorted(self.contested.items())
                       if key in self.carried or (key == "status" and self.path)]
        # Status and assignees are each side's own ids: only fields of one value lose visibly.
        yielded = [(key, self.now.get(key), owner) for key, (target_key, owner) in sorted(self.yielding.items())
                   if key not in ("status", "assignees", "parent")
                   and changed_fields({key: self.target_value(key)}, {key: self.other_now.get(target_key)})]
        return SyncPlan(self.create, self.body, tuple(self.path), tuple(self.source_moves),
                        tuple(self.notes), tuple(self.parked), tuple(self.carried), self.held,
                        tuple(overwritten), tuple(yielded))


# Planfix's clock and ours may differ by this much (the poller assumes as much): a task created
# this close to the deployment's start is taken as new, as the error that costs less is a mirror
# of a task just older than the link rather than none of one just newer.
CLOCK_SKEW_S = 180.0


def created_epoch(task: Mapping[str, Any]) -> float | None:
    """When TASK (raw, with dateTime: its creation) was made, where Planfix says so to the
    second in UTC (dateTimeUtcSeconds); None otherwise."""
    point = task.get("dateTime")
    text = point.get("dateTimeUtcSeconds") if isinstance(point, Mapping) else None
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z").timestamp() if text else None
    except ValueError:
        return None


def older_than_link(created: float | None, since: float | None) -> bool:
    """Whether a task made at CREATED existed before the deployment began serving its side (at
    SINCE): such a task, unpaired, is mirrored or paired only by a decision (backfill, or a
    person), never by a sync run, since a copy may exist by hand on the other side. Unknown
    either way: not older (a run outside a deployment, a date without seconds)."""
    return created is not None and since is not None and created < since - CLOCK_SKEW_S


def plan_task_sync(link: Link, source_side: str, source_now: Mapping[str, Any],
                   source_snapshot: Mapping[str, Any] | None, target_now: Mapping[str, Any] | None,
                   target_snapshot: Mapping[str, Any] | None, counterpart: Callable[[str, int], int | None],
                   names: Mapping[str, str], landing: Mapping[str, Any] | None = None) -> SyncPlan:
    """Plan SOURCE_SIDE's task's sync into its counterpart (TARGET_NOW None: create it).

    All task views are canonical (workers.canonical.canonical_task) on their own side. LANDING:
    target values that writes Planfix queued are still to give it (field_diff.still_to_land).
    """
    return _Planner(link, source_side, source_now, source_snapshot, target_now, target_snapshot,
                    counterpart, names, landing or {}).plan()
