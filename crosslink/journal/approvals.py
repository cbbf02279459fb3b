"""Who must approve a new version of a link's rules, who may, and which version is in force.

One set of rules governs what crosses between two organisations' accounts, so neither should
change it alone (issue 22): a new version needs both sides' approval, except where it only
narrows what ONE side sends from its own account, which that side may do alone. Until a version
is approved by every side it needs, the version before it stays in force. These are decisions
with no I/O, over the rules as plain data (crosslink.journal.chain.rules_of) and over the events
a version store keeps (crosslink.journal.versions), so they can be tested exhaustively.

What counts as narrowing, for a side S (everything else needs both sides):
- S's own sending controls tightened (sides.S.send): paused set, a first exclude_comments regex
  or the old one extended as ``<old>|<more>`` (it then matches all it matched, and more), task
  filters added to exclude_tasks (none removed);
- a field, custom field, the checklist or the files no longer sent from S: a direction whose
  senders lose S and gain nobody ("both" to the other side's direction, S's direction to "none").
Loosening any of these (a pause lifted, an exclusion dropped) lets more into the other account,
so it needs both, like a change of approvers: who decides for a side is part of the version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from crosslink.journal.chain import UNSET_SIDE_KEYS
from schemas.links import SIDES

# The states a version goes through. PROPOSED waits for approvals; ACTIVE is in force; the others
# are ends: REJECTED by a side it needs, WITHDRAWN by its proposer, SUPERSEDED by a newer proposal
# while it waited, RETIRED when a newer version took its place in force.
PROPOSED, ACTIVE, REJECTED, WITHDRAWN, SUPERSEDED, RETIRED = (
    "proposed", "active", "rejected", "withdrawn", "superseded", "retired")
STATES = (PROPOSED, ACTIVE, REJECTED, WITHDRAWN, SUPERSEDED, RETIRED)
APPROVED_VERDICT, REJECTED_VERDICT = "approved", "rejected"
# Which sides send a field on each direction.
SENDERS: Mapping[str, frozenset[str]] = {
    "both": frozenset(SIDES), "partner_to_client": frozenset({"partner"}),
    "client_to_partner": frozenset({"client"}), "none": frozenset()}
BOTH = frozenset(SIDES)


# --- who must approve -------------------------------------------------------------------------


def needs(old_rules: Mapping[str, Any], new_rules: Mapping[str, Any]) -> frozenset[str]:
    """The sides whose approval moving from OLD_RULES to NEW_RULES needs: the one side whose
    sending alone is narrowed (see the module's docstring), else both; none when nothing changes."""
    if old_rules == new_rules:
        return frozenset()
    if _fixed(old_rules) != _fixed(new_rules):
        return BOTH
    narrowed: set[str] = set()
    for side in SIDES:
        change = _send_change(_send(old_rules, side), _send(new_rules, side))
        if change is None:
            return BOTH
        if change:
            narrowed.add(side)
    for before, after in _directions(old_rules, new_rules):
        if before == after:
            continue
        senders, senders_now = SENDERS.get(before), SENDERS.get(after)
        if senders is None or senders_now is None or not senders_now < senders or len(senders - senders_now) != 1:
            return BOTH
        narrowed |= senders - senders_now
    return frozenset(narrowed) or BOTH


def _fixed(rules: Mapping[str, Any]) -> Any:
    """RULES without what a side may narrow alone (its send controls, each field's direction)."""
    fixed = json.loads(json.dumps(rules))
    for side in fixed.get("sides", {}).values():
        side.pop("send", None)
    fields = fixed.get("fields", {})
    for rule in [*fields.get("rules", {}).values(), *fields.get("custom", []), fields.get("checklist"),
                 fields.get("files")]:
        if isinstance(rule, dict):
            rule.pop("direction", None)
    return fixed


def _send(rules: Mapping[str, Any], side: str) -> Mapping[str, Any]:
    return rules["sides"][side].get("send", UNSET_SIDE_KEYS["send"])


def _send_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool | None:
    """False: SIDE's send controls are the same; True: only tightened; None: loosened somewhere."""
    if old == new:
        return False
    if old.get("paused") and not new.get("paused"):
        return None
    before, after = old.get("exclude_comments"), new.get("exclude_comments")
    if before != after and not (before is None and after) and not (
            before and isinstance(after, str) and after.startswith(before + "|")):
        return None
    had = {json.dumps(item, sort_keys=True) for item in old.get("exclude_tasks", [])}
    has = {json.dumps(item, sort_keys=True) for item in new.get("exclude_tasks", [])}
    return True if had <= has else None


def _directions(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Each field's direction before and after (their fixed parts are equal: same fields, same order)."""
    old_fields, new_fields = old.get("fields", {}), new.get("fields", {})
    for name, rule in old_fields.get("rules", {}).items():
        yield rule.get("direction"), new_fields["rules"][name].get("direction")
    for before, after in zip(old_fields.get("custom", []), new_fields.get("custom", []), strict=True):
        yield before.get("direction"), after.get("direction")
    for name in ("checklist", "files"):
        if isinstance(old_fields.get(name), dict):
            yield old_fields[name].get("direction"), new_fields[name].get("direction")


# --- who may approve --------------------------------------------------------------------------


def may_decide(in_force: Mapping[str, Any], proposed: Mapping[str, Any], side: str, person: str,
               verdict: str) -> str | None:
    """Why PERSON may not give VERDICT (approved or rejected) on PROPOSED for SIDE, with the rules
    IN_FORCE; None when they may. The approvers are those of the version in force: a proposal
    cannot name its own. A side that names none in force yet counts, for an approval, the
    approvers the proposal names for it (the first time approvers are set, visible in the diff
    both sides are shown), and lets anyone of its account reject (a rejection keeps what is in
    force). The side's integration user never decides: its comments are the sync's own."""
    if side not in SIDES:
        return f"unknown side {side!r}"
    if person in {_side(in_force, side).get("integration_user"), _side(proposed, side).get("integration_user")}:
        return f"{person} is the {side} side's integration user: it cannot decide for the side"
    named = list(_side(in_force, side).get("approvers", []))
    if named:
        return None if person in named else (f"{person} is not an approver of the {side} side in the version in "
                                             f"force ({', '.join(named)})")
    if verdict == REJECTED_VERDICT:
        return None
    offered = list(_side(proposed, side).get("approvers", []))
    if person in offered:
        return None
    return (f"the {side} side names no approvers in the version in force, and the proposal names "
            f"{', '.join(offered) or 'none'}: {person} cannot approve for it")


def _side(rules: Mapping[str, Any], side: str) -> Mapping[str, Any]:
    return rules.get("sides", {}).get(side, {})


# --- which version is in force ----------------------------------------------------------------


@dataclass(frozen=True)
class Proposed:
    """Version VERSION proposed, needing the approval of NEEDS (an empty or unknown set: both)."""

    version: int
    needs: frozenset[str]
    at: str = ""


@dataclass(frozen=True)
class Approved:
    version: int
    side: str
    person: str = ""
    at: str = ""


@dataclass(frozen=True)
class Rejected:
    version: int
    side: str
    person: str = ""
    at: str = ""


@dataclass(frozen=True)
class Withdrawn:
    version: int
    person: str = ""
    at: str = ""


Event = Proposed | Approved | Rejected | Withdrawn


@dataclass
class VersionState:
    """Where one version stands: its STATE, the sides it NEEDS, those that APPROVED and REJECTED
    it (also sides it does not need: kept, not required), when it became active and ended."""

    number: int
    needs: frozenset[str]
    state: str = PROPOSED
    approved: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    proposed_at: str = ""
    activated_at: str | None = None
    closed_at: str | None = None


@dataclass
class Decision:
    """Every version's state, the one ACTIVE (in force; None before the first is approved) and the
    one PENDING (proposed, awaiting approvals; at most one)."""

    versions: dict[int, VersionState] = field(default_factory=dict)
    active: int | None = None
    pending: int | None = None


def decide(events: Iterable[Event]) -> Decision:
    """Replay EVENTS in order. A proposal must be newer than every version before it (else it is
    ignored) and supersedes the one pending; it becomes active once every side it needs has
    approved it, and the one in force then retires. A rejection by a side it needs, or a
    withdrawal, ends it while it waits; events about a version that no longer waits change nothing."""
    decision = Decision()
    for event in events:
        if isinstance(event, Proposed):
            _propose(decision, event)
            continue
        waiting = decision.versions.get(event.version)
        if waiting is None or waiting.state != PROPOSED:
            continue
        if isinstance(event, Withdrawn):
            _close(decision, waiting, WITHDRAWN, event.at)
        elif event.side not in SIDES:
            continue
        elif isinstance(event, Rejected):
            waiting.rejected.add(event.side)
            if event.side in waiting.needs:
                _close(decision, waiting, REJECTED, event.at)
        else:
            waiting.approved.add(event.side)
            if waiting.needs <= waiting.approved:
                _activate(decision, waiting, event.at)
    return decision


def _propose(decision: Decision, event: Proposed) -> None:
    if decision.versions and event.version <= max(decision.versions):
        return
    if decision.pending is not None:
        _close(decision, decision.versions[decision.pending], SUPERSEDED, event.at)
    needed = frozenset(event.needs) & BOTH or BOTH
    decision.versions[event.version] = VersionState(event.version, needed, proposed_at=event.at)
    decision.pending = event.version


def _close(decision: Decision, version: VersionState, state: str, at: str) -> None:
    version.state, version.closed_at = state, at
    if decision.pending == version.number:
        decision.pending = None


def _activate(decision: Decision, version: VersionState, at: str) -> None:
    if decision.active is not None:
        _close(decision, decision.versions[decision.active], RETIRED, at)
    version.state, version.activated_at = ACTIVE, at
    decision.active, decision.pending = version.number, None
