"""What changed on a task since the last sync, and which way each field may flow.

A sync run carries only what its side changed since the last state both sides agreed on (the
snapshot). Comparing against the snapshot instead of the counterpart is what lets the two sides
edit different fields at the same time without overwriting each other.

Assumptions:
- Canonical values come from workers.canonical, so equal values compare equal; tuples and lists
  are treated as the same (a snapshot read back from JSON has lists where a fresh view may not).
- No snapshot means "never synced": every field counts as changed.
- A key present on one side of the comparison only counts as changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.links import Link

# Directions under which a field read on the given side flows to the other one.
FLOWS_FROM = {
    "partner": frozenset({"both", "partner_to_client"}),
    "client": frozenset({"both", "client_to_partner"}),
}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def changed_fields(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> set[str]:
    """The canonical keys whose value differs between PREVIOUS (a snapshot, or None) and CURRENT."""
    if previous is None:
        return set(current)
    keys = set(previous) | set(current)
    missing = object()
    return {key for key in keys
            if _plain(previous.get(key, missing)) != _plain(current.get(key, missing))}


def agreed_with_echoes(snapshot: Mapping[str, Any] | None, now: Mapping[str, Any],
                       expected: Mapping[str, Any]) -> dict[str, Any] | None:
    """SNAPSHOT, with every key whose value NOW is the one the sync's own unagreed write should
    give it (EXPECTED: a write Planfix queued, or one sent by a run that failed after sending).
    Such a value is the echo of our write, not a person's change: taken as a change, it was
    carried back and undid the write it echoed (a stand-in delegated back as a real assignee)."""
    if snapshot is None:
        return None
    echoes = {key: now[key] for key, value in expected.items()
              if key in now and not changed_fields({key: value}, {key: now[key]})}
    return {**snapshot, **echoes}


def flows(link: Link, field: str, source_side: str) -> bool:
    """Whether canonical FIELD read on SOURCE_SIDE is carried to the other side.

    ``field`` is a canonical key ("name", "assignees", "status", "cf:<source side id>"); a custom
    field the link does not map never flows.
    """
    rule = link.fields.rule_for(field, source_side)
    return rule is not None and rule.direction in FLOWS_FROM[source_side]
